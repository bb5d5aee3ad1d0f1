"""tensorforge's thread pool, as LLVM IR: ``void tf_parallel(void (*fn)(void *), void *data, int n)``.

Every ``PARALLEL`` loop of a kernel is outlined into ``fn`` (see ``llvm/loops.py``); its threads claim chunks
of the iteration range from an atomic counter in ``data``, so *any* number of threads, including the
caller alone, completes the loop. The pool is built around that:

* The caller publishes the job, wakes the sleeping workers (one futex call, only when some sleep) and
  starts on the chunks itself at once.
* A worker that wakes joins only while the job is open; the caller closes the job when it runs out of
  chunks and waits only for the workers *inside* it (which are running chunks). It never waits for a
  worker that is still asleep or waking up: a late worker finds the job closed and goes back to sleep.
  (libgomp's ``GOMP_parallel`` ends in a barrier for the whole team; with idle threads that do not spin,
  every parallel region then paid a wake-up latency twice, 10-20 us each on a VM: MobileNet-v2 at batch 1
  ran 30% slower on 2 threads than with spinning workers.)
* Idle workers spin ``tf_pool_spin`` iterations (a ``pause`` each) before they sleep on the futex:
  0 when ``OMP_WAIT_POLICY=PASSIVE`` (no pool spins while another runtime runs), see ``runtime/jit.py``.
* The caller waits for the workers inside the job with a few hundred ``pause``s, then ``sched_yield``
  between looks: a worker that shares the caller's core (an oversubscribed machine) gets to finish.
* One job at a time: a caller that finds the pool busy (another Python thread running a model) runs its
  loop alone. Workers are created on first use, up to the largest thread count asked for; a job of
  ``n`` threads lets at most ``n - 1`` workers join. After ``fork`` the child starts with no workers
  (``pthread_atfork``) and grows its own.

Correctness never depends on a worker showing up. One word, ``tf_pool_state`` (the futex), is twice the
job number plus an "open" bit: the caller adds 1 to open a job and 1 to close it. Every shared access is
a sequentially consistent atomic. A worker that saw state ``s`` open counts itself in ``active``
*before* it checks that the state is still ``s``, and the caller closes the job *before* it waits for
``active`` to drain, so a worker either finds its job gone or is waited for (the job's ``data`` lives on
the caller's stack); it joins each job at most once, as ``s`` never comes back.

Linux only (futex, pthreads); the same module is linked into exported libraries (``runtime/aot.py``).
"""

from __future__ import annotations

from ..errors import CompileError
from .targets import Target

SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
FUTEX_WAIT_PRIVATE = 128
FUTEX_WAKE_PRIVATE = 129


def pool_ir(target: Target, jit: bool = True) -> str:
    """The pool for ``target`` (a CPU target) as LLVM IR text. ``pthread_atfork`` lives in glibc's static
    libc_nonshared.a, which a JIT cannot resolve: in-process the pool calls ``__register_atfork`` (the
    pool is never unloaded, so no DSO handle is needed); an exported library links ``pthread_atfork``."""
    arch = target.triple.split("-")[0]
    if arch not in SYS_FUTEX:
        raise CompileError(f"no thread pool for target {target.name} ({target.triple}): Linux x86-64 and AArch64 only")
    # a spin-wait hint: x86 ``pause``; AArch64 ``yield`` (hint #1) as an intrinsic, not inline asm, which
    # llvmlite cannot assemble for AArch64 (no asm parser for the target)
    if arch == "x86_64":
        pause, pause_decl = "call void @llvm.x86.sse2.pause()", "declare void @llvm.x86.sse2.pause()"
    else:
        pause, pause_decl = "call void @llvm.aarch64.hint(i32 1)", "declare void @llvm.aarch64.hint(i32)"
    futex = SYS_FUTEX[arch]
    if jit:
        atfork_decl = "declare i32 @__register_atfork(ptr, ptr, ptr, ptr)"
        atfork = "call i32 @__register_atfork(ptr null, ptr null, ptr @tf_pool_child_reset, ptr null)"
    else:
        atfork_decl = "declare i32 @pthread_atfork(ptr, ptr, ptr)"
        atfork = "call i32 @pthread_atfork(ptr null, ptr null, ptr @tf_pool_child_reset)"
    return f"""
target triple = "{target.triple}"

@tf_pool_busy = internal global i32 0, align 64
@tf_pool_state = internal global i32 0, align 64
@tf_pool_active = internal global i32 0, align 64
@tf_pool_joined = internal global i32 0, align 64
@tf_pool_limit = internal global i32 0, align 4
@tf_pool_sleepers = internal global i32 0, align 64
@tf_pool_fn = internal global ptr null, align 8
@tf_pool_data = internal global ptr null, align 8
@tf_pool_workers = internal global i32 0, align 4
@tf_pool_atfork = internal global i32 0, align 4
@tf_pool_spin = hidden global i32 1000, align 4

declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_detach(i64)
{atfork_decl}
declare i64 @syscall(i64, ...)
declare i32 @sched_yield()
{pause_decl}

define internal void @tf_pool_child_reset() nounwind {{
  store atomic i32 0, ptr @tf_pool_workers seq_cst, align 4
  store atomic i32 0, ptr @tf_pool_busy seq_cst, align 4
  store atomic i32 0, ptr @tf_pool_state seq_cst, align 4
  store atomic i32 0, ptr @tf_pool_active seq_cst, align 4
  store atomic i32 0, ptr @tf_pool_sleepers seq_cst, align 4
  ret void
}}

define internal ptr @tf_pool_worker(ptr %arg) nounwind {{
entry:
  %seen0 = load atomic i32, ptr @tf_pool_state seq_cst, align 4
  br label %wait
wait:
  %seen = phi i32 [ %seen0, %entry ], [ %seen, %sleep ], [ %cur, %got ], [ %cur, %done ]
  %spin = load atomic i32, ptr @tf_pool_spin monotonic, align 4
  br label %spinloop
spinloop:
  %i = phi i32 [ 0, %wait ], [ %i1, %spinbody ]
  %s = load atomic i32, ptr @tf_pool_state seq_cst, align 4
  %changed = icmp ne i32 %s, %seen
  br i1 %changed, label %got, label %spincheck
spincheck:
  %more = icmp slt i32 %i, %spin
  br i1 %more, label %spinbody, label %sleep
spinbody:
  {pause}
  %i1 = add i32 %i, 1
  br label %spinloop
sleep:
  %sl = atomicrmw add ptr @tf_pool_sleepers, i32 1 seq_cst, align 4
  %r = call i64 (i64, ...) @syscall(i64 {futex}, ptr @tf_pool_state, i32 {FUTEX_WAIT_PRIVATE}, i32 %seen, ptr null)
  %sl2 = atomicrmw sub ptr @tf_pool_sleepers, i32 1 seq_cst, align 4
  %s2 = load atomic i32, ptr @tf_pool_state seq_cst, align 4
  %changed2 = icmp ne i32 %s2, %seen
  br i1 %changed2, label %got, label %wait
got:
  %cur = load atomic i32, ptr @tf_pool_state seq_cst, align 4
  %odd = and i32 %cur, 1
  %isopen = icmp ne i32 %odd, 0
  br i1 %isopen, label %enter, label %wait
enter:
  %a0 = atomicrmw add ptr @tf_pool_active, i32 1 seq_cst, align 4
  %s3 = load atomic i32, ptr @tf_pool_state seq_cst, align 4
  %same = icmp eq i32 %s3, %cur
  br i1 %same, label %join, label %done
join:
  %j = atomicrmw add ptr @tf_pool_joined, i32 1 seq_cst, align 4
  %lim = load atomic i32, ptr @tf_pool_limit seq_cst, align 4
  %take = icmp slt i32 %j, %lim
  br i1 %take, label %run, label %done
run:
  %fn = load atomic ptr, ptr @tf_pool_fn seq_cst, align 8
  %data = load atomic ptr, ptr @tf_pool_data seq_cst, align 8
  call void %fn(ptr %data)
  br label %done
done:
  %a1 = atomicrmw sub ptr @tf_pool_active, i32 1 seq_cst, align 4
  br label %wait
}}

define hidden void @tf_parallel(ptr %fn, ptr %data, i32 %n) nounwind {{
entry:
  %tid = alloca i64, align 8
  %few = icmp sle i32 %n, 1
  br i1 %few, label %serial, label %try
try:
  %cx = cmpxchg ptr @tf_pool_busy, i32 0, i32 1 seq_cst seq_cst, align 4
  %mine = extractvalue {{ i32, i1 }} %cx, 1
  br i1 %mine, label %atfork, label %serial
serial:
  call void %fn(ptr %data)
  ret void
atfork:
  %af = load i32, ptr @tf_pool_atfork, align 4
  %need = icmp eq i32 %af, 0
  br i1 %need, label %register, label %grow
register:
  %rr = {atfork}
  store i32 1, ptr @tf_pool_atfork, align 4
  br label %grow
grow:
  %w = load atomic i32, ptr @tf_pool_workers seq_cst, align 4
  %want = sub i32 %n, 1
  %short = icmp slt i32 %w, %want
  br i1 %short, label %spawn, label %post
spawn:
  %rc = call i32 @pthread_create(ptr %tid, ptr null, ptr @tf_pool_worker, ptr null)
  %created = icmp eq i32 %rc, 0
  br i1 %created, label %spawned, label %post
spawned:
  %t = load i64, ptr %tid, align 8
  %rd = call i32 @pthread_detach(i64 %t)
  %w1 = add i32 %w, 1
  store atomic i32 %w1, ptr @tf_pool_workers seq_cst, align 4
  br label %grow
post:
  %lim = sub i32 %n, 1
  store atomic ptr %fn, ptr @tf_pool_fn seq_cst, align 8
  store atomic ptr %data, ptr @tf_pool_data seq_cst, align 8
  store atomic i32 0, ptr @tf_pool_joined seq_cst, align 4
  store atomic i32 %lim, ptr @tf_pool_limit seq_cst, align 4
  %opened = atomicrmw add ptr @tf_pool_state, i32 1 seq_cst, align 4
  %sleepers = load atomic i32, ptr @tf_pool_sleepers seq_cst, align 4
  %wake = icmp sgt i32 %sleepers, 0
  br i1 %wake, label %wakeup, label %work
wakeup:
  %wr = call i64 (i64, ...) @syscall(i64 {futex}, ptr @tf_pool_state, i32 {FUTEX_WAKE_PRIVATE}, i32 %lim)
  br label %work
work:
  call void %fn(ptr %data)
  %closed = atomicrmw add ptr @tf_pool_state, i32 1 seq_cst, align 4
  br label %drain
drain:
  %k = phi i32 [ 0, %work ], [ %k1, %drainpause ], [ 0, %drainyield ]
  %act = load atomic i32, ptr @tf_pool_active seq_cst, align 4
  %inside = icmp ne i32 %act, 0
  br i1 %inside, label %drainwait, label %finish
drainwait:
  %patient = icmp slt i32 %k, 256
  br i1 %patient, label %drainpause, label %drainyield
drainpause:
  {pause}
  %k1 = add i32 %k, 1
  br label %drain
drainyield:
  %y = call i32 @sched_yield()
  br label %drain
finish:
  store atomic i32 0, ptr @tf_pool_busy seq_cst, align 4
  ret void
}}
"""


__all__ = ["pool_ir"]
