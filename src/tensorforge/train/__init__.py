"""Training: a model's whole step (forward, loss, backward, optimizer update) compiled into one native
call (``step.py``), the optimizers (``optim.py``), the epoch loop (``trainer.py``), built-in datasets
(``datasets.py``) and the ``tensorforge train`` / demo driver (``demo.py``)."""
