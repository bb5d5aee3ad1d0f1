"""The C source of a training library's session layer (``runtime/aot_train.py`` fills it in after
``capi.common_source``). Names from the model appear only inside C string literals (``c_string``).

A session's state lives in one 64-byte aligned block: every state buffer, then the learning rate, the loss
and the update check, each where ``aot_train._Layout`` put it. The training program's input and output tables
point into the block once; a step only swaps in the batch's pointers.

The state file (``<p>_save_state``), little-endian, 128-byte header then the payload:
    0 magic "TFTSTATE" | 8 u32 version | 12 u32 number of buffers | 16 u64 payload bytes | 24 u64 steps |
    32 f64 learning rate | 40 u64 FNV-1a 64 of the payload | 48 32-byte sha256 of the layout | 80 zeros
    payload: every state buffer in order, packed.
"""

TRAINING_SOURCE = r"""
/* ---- the training session ---- */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

/* the training program: its symbols renamed apart from the forward program's (tf_run) */
extern TF_HIDDEN int32_t tf_train_run(const void *const *inputs, void *const *outputs, const void *const *consts,
                                      void *arena);

typedef ${real} tf_real;  /* the model's float type: the learning rate, the loss, the update check */
#define TF_N_STATE ${n_state}
#define TF_N_CHECK ${n_check}
#define TF_N_LABELS ${n_labels}
#define TF_NUM_CLASSES ${classes}
#define TF_STATE_HEADER ${header}
#define TF_STATE_VERSION ${version}u
static const uint64_t tft_const_offsets[${t_n_consts}] = {${t_const_offsets}};
static const long tft_status_offset = ${t_status_offset};
static const char *const tft_formats[] = {
${t_fmts}
};
static const int tft_format_base[] = {${t_fmt_base}};
static const int tft_format_count[] = {${t_fmt_count}};
static const int64_t tf_target_shape[] = {${target_shape}};
static const ${p}_tensor_info tf_target = {${target_name}, ${target_dtype}, ${target_rank}, tf_target_shape,
                                           ${target_numel}u, ${target_bytes}u};
${state_tables}
static const unsigned char tf_state_digest[32] = {${digest}};
static const uint64_t tf_state_bytes = ${state_bytes}ULL;  /* the state file's payload */
static const size_t tf_block_bytes = ${block_bytes};
static const size_t tf_lr_off = ${lr_off}, tf_loss_off = ${loss_off}, tf_check_off = ${check_off};

struct ${p}_session {
    const unsigned char *weights;
    void *weights_mem;
    const void *pconsts[${p_n_consts}];   /* the forward program's constants */
    const void *tconsts[${t_n_consts}];   /* the training program's */
    unsigned char *block;                  /* state, learning rate, loss, update check */
    const void *pin[${p_n_in}];           /* the programs' input and output tables */
    const void *tin[${t_n_in}];
    void *tout[${t_n_out}];
    void *workspace;                       /* the arena, shared by both programs */
    unsigned char *arena;
    double lr;
    uint64_t steps;
    int threads;
    int busy;
    char error[TF_ERR];
};

static void tf_bind_static(${p}_session *s) {
${bind_static}
}

static int tf_acquire(${p}_session *s) {
    return __atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE) ? ${P}_ERROR_BUSY : 0;
}

static void tf_release(${p}_session *s) { __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE); }

static void tf_free_session(${p}_session *s) {
    free(s->block);
    free(s->workspace);
    free(s->weights_mem);
    free(s);
}

/* The message of a failing run-time check of the training program (tf_check_message's twin). */
static void tft_check_message(const unsigned char *arena, char *err) {
    const int64_t *st = (const int64_t *)(arena + tft_status_offset);
    int64_t id = tft_status_offset >= 0 ? st[1] : -1;
    if (id < 0 || id >= (int64_t)(sizeof tft_format_base / sizeof tft_format_base[0]) || tft_formats[0] == 0) {
        tf_fail_text(err, 0, "a run-time check of the training step failed");
        return;
    }
    int k = tft_format_count[id] > 0 ? (int)(st[3] % tft_format_count[id]) : 0;
    snprintf(err, TF_ERR, tft_formats[tft_format_base[id] + k], (long long)st[2], (long long)st[3]);
}

static uint64_t tf_fnv1a(uint64_t h, const unsigned char *p, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

#define TF_FNV_INIT 0xcbf29ce484222325ULL

/* Reads a state file into the session: checked whole before anything changes. */
static int tf_read_state(${p}_session *s, const char *path, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, TF_ERR, "model %s: cannot open the state file '%s': %s", tf_model_name, path, strerror(errno));
        return ${P}_ERROR_IO;
    }
    unsigned char head[TF_STATE_HEADER];
    if (fread(head, 1, sizeof head, f) != sizeof head || memcmp(head, ${magic}, 8) != 0) {
        fclose(f);
        snprintf(err, TF_ERR, "model %s: '%s' is not a tensorforge training state file", tf_model_name, path);
        return ${P}_ERROR_WEIGHTS;
    }
    uint32_t version, count;
    uint64_t bytes, steps, sum;
    double lr;
    memcpy(&version, head + 8, 4);
    memcpy(&count, head + 12, 4);
    memcpy(&bytes, head + 16, 8);
    memcpy(&steps, head + 24, 8);
    memcpy(&lr, head + 32, 8);
    memcpy(&sum, head + 40, 8);
    if (version != TF_STATE_VERSION) {
        fclose(f);
        snprintf(err, TF_ERR, "model %s: '%s' has state format version %u; this library reads version %u",
                 tf_model_name, path, (unsigned)version, (unsigned)TF_STATE_VERSION);
        return ${P}_ERROR_WEIGHTS;
    }
    if (count != TF_N_STATE || bytes != tf_state_bytes || memcmp(head + 48, tf_state_digest, 32) != 0) {
        fclose(f);
        snprintf(err, TF_ERR, "model %s: '%s' holds the state of another model or optimizer (%u buffers, %llu "
                 "bytes; this library's step has %d buffers, %llu bytes, and a different layout digest)",
                 tf_model_name, path, (unsigned)count, (unsigned long long)bytes, TF_N_STATE,
                 (unsigned long long)tf_state_bytes);
        return ${P}_ERROR_WEIGHTS;
    }
    unsigned char *buf = malloc(bytes ? bytes : 1);
    if (buf == NULL) {
        fclose(f);
        return tf_fail_text(err, ${P}_ERROR_NO_MEMORY, "out of memory reading a state file");
    }
    int truncated = fread(buf, 1, bytes, f) != bytes;
    int longer = !truncated && fgetc(f) != EOF;
    fclose(f);
    const char *bad = truncated ? "is truncated" : longer ? "is longer than its header says"
                      : tf_fnv1a(TF_FNV_INIT, buf, bytes) != sum ? "is corrupt (its checksum does not match)"
                      : !(lr >= 0 && lr <= 1e300) ? "is corrupt (its learning rate is not a finite number >= 0)" : 0;
    if (bad) {
        free(buf);
        snprintf(err, TF_ERR, "model %s: the state file '%s' %s", tf_model_name, path, bad);
        return ${P}_ERROR_WEIGHTS;
    }
    size_t pos = 0;
    for (int k = 0; k < TF_N_STATE; k++) {
        memcpy(s->block + tf_state_off[k], buf + pos, tf_state[k].bytes);
        pos += tf_state[k].bytes;
    }
    free(buf);
    s->lr = lr;
    s->steps = steps;
    return 0;
}

/* Writes the state to a temporary file next to path, then renames it over path. */
static int tf_write_state(${p}_session *s, const char *path) {
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (tmp == NULL) return tf_fail_text(s->error, ${P}_ERROR_NO_MEMORY, "out of memory");
    snprintf(tmp, n + 16, "%s.tmp-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(s->error, TF_ERR, "model %s: cannot write the state file '%s': %s", tf_model_name, path,
                 strerror(errno));
        free(tmp);
        return ${P}_ERROR_IO;
    }
    struct stat st;  /* mkstemp makes the file 0600: keep the old file's mode, or 0644 */
    fchmod(fd, stat(path, &st) == 0 ? (st.st_mode & 0777) : 0644);
    unsigned char head[TF_STATE_HEADER];
    memset(head, 0, sizeof head);
    uint32_t version = TF_STATE_VERSION, count = TF_N_STATE;
    uint64_t bytes = tf_state_bytes, steps = s->steps, sum = TF_FNV_INIT;
    for (int k = 0; k < TF_N_STATE; k++) sum = tf_fnv1a(sum, s->block + tf_state_off[k], tf_state[k].bytes);
    memcpy(head, ${magic}, 8);
    memcpy(head + 8, &version, 4);
    memcpy(head + 12, &count, 4);
    memcpy(head + 16, &bytes, 8);
    memcpy(head + 24, &steps, 8);
    memcpy(head + 32, &s->lr, 8);
    memcpy(head + 40, &sum, 8);
    memcpy(head + 48, tf_state_digest, 32);
    FILE *f = fdopen(fd, "wb");
    int ok = f != NULL && fwrite(head, 1, sizeof head, f) == sizeof head;
    for (int k = 0; ok && k < TF_N_STATE; k++)
        ok = fwrite(s->block + tf_state_off[k], 1, tf_state[k].bytes, f) == tf_state[k].bytes;
    ok = ok && fflush(f) == 0 && fsync(fd) == 0;
    int saved = errno;
    if (f != NULL) ok = fclose(f) == 0 && ok;
    else close(fd);
    if (ok && rename(tmp, path) != 0) ok = 0, saved = errno;
    if (!ok) {
        unlink(tmp);
        free(tmp);
        snprintf(s->error, TF_ERR, "model %s: cannot write the state file '%s': %s", tf_model_name, path,
                 strerror(saved ? saved : EIO));
        return ${P}_ERROR_IO;
    }
    free(tmp);
    return 0;
}

#if TF_NUM_CLASSES > 0
static const char tf_trained_output[] = ${trained_output};

/* Class indices out of range never reach native code (they would index out of the output). */
static int tf_check_classes(const void *y, char *err) {
    const int64_t *t = (const int64_t *)y;
    for (size_t i = 0; i < tf_target.numel; i++)
        if (t[i] < 0 || t[i] >= TF_NUM_CLASSES) {
            snprintf(err, TF_ERR, "model %s: class index %lld at position %zu is out of range; the output '%s' has "
                     "%d classes (0..%d)", tf_model_name, (long long)t[i], i, tf_trained_output, TF_NUM_CLASSES,
                     TF_NUM_CLASSES - 1);
            return ${P}_ERROR_ARGUMENT;
        }
    return 0;
}
#endif

TF_API const ${p}_tensor_info *${p}_target_info(void) { return &tf_target; }
TF_API int ${p}_batch_size(void) { return ${batch}; }
TF_API int ${p}_num_classes(void) { return TF_NUM_CLASSES; }
TF_API int ${p}_num_state(void) { return TF_N_STATE; }
TF_API const ${p}_tensor_info *${p}_state_info(int i) { return i >= 0 && i < TF_N_STATE ? &tf_state[i] : NULL; }
TF_API const char *${p}_state_kind(int i) { return i >= 0 && i < TF_N_STATE ? tf_state_kind[i] : NULL; }

TF_API int ${p}_session_create(${p}_session **out, const char *state_path) {
    if (out == NULL) return ${P}_ERROR_ARGUMENT;
    *out = NULL;
    int rc = tf_check_cpu(tf_create_error);
    if (rc) return rc;
    ${p}_session *s = calloc(1, sizeof *s);
    if (s == NULL) return tf_fail_text(tf_create_error, ${P}_ERROR_NO_MEMORY, "out of memory");
    rc = tf_load_weights(NULL, &s->weights, &s->weights_mem, tf_create_error);
    if (rc) { free(s); return rc; }
    for (int i = 0; i < (int)(sizeof tf_const_offsets / sizeof tf_const_offsets[0]); i++)
        s->pconsts[i] = s->weights + tf_const_offsets[i];
    for (int i = 0; i < (int)(sizeof tft_const_offsets / sizeof tft_const_offsets[0]); i++)
        s->tconsts[i] = s->weights + tft_const_offsets[i];
    void *block = NULL;
    if (posix_memalign(&s->workspace, TF_ALIGN, tf_workspace_bytes) != 0) s->workspace = NULL;
    if (s->workspace == NULL || posix_memalign(&block, TF_ALIGN, tf_block_bytes) != 0) {
        tf_free_session(s);
        return tf_fail_text(tf_create_error, ${P}_ERROR_NO_MEMORY, "out of memory for the state and workspace");
    }
    s->block = block;
    memset(s->block, 0, tf_block_bytes);
    for (int k = 0; k < TF_N_STATE; k++)
        memcpy(s->block + tf_state_off[k], s->weights + tf_state_init[k], tf_state[k].bytes);
    s->arena = s->workspace;
    s->threads = 1;
    s->lr = ${lr};
    s->steps = ${steps}ULL;
    tf_bind_static(s);
    if (state_path != NULL && (rc = tf_read_state(s, state_path, tf_create_error)) != 0) {
        tf_free_session(s);
        return rc;
    }
    tf_create_error[0] = 0;
    *out = s;
    return ${P}_OK;
}

TF_API void ${p}_session_destroy(${p}_session *s) {
    if (s != NULL) tf_free_session(s);
}

${session_accessors}

TF_API int ${p}_train_step(${p}_session *s, const void *const *x, const void *y, float *loss) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (tf_acquire(s)) return ${P}_ERROR_BUSY;
    int rc = tf_check_pointers(x, tf_inputs, ${p}_num_inputs(), "input", s->error);
    if (!rc) rc = tf_check_pointers(&y, &tf_target, 1, "target", s->error);
#if TF_NUM_CLASSES > 0
    if (!rc) rc = tf_check_classes(y, s->error);
#endif
    if (!rc) {
${bind_train}
        tf_real *lr = (tf_real *)(s->block + tf_lr_off);
        const tf_real *l = (const tf_real *)(s->block + tf_loss_off);
        const tf_real *check = (const tf_real *)(s->block + tf_check_off);
        *lr = (tf_real)s->lr;
        tf_num_threads = s->threads;
        rc = tf_train_run(s->tin, s->tout, s->tconsts, s->arena);
        if (rc) {
            tft_check_message(s->arena, s->error);
            rc = ${P}_ERROR_INDEX;
        } else {
            if (loss) *loss = (float)*l;
            int bad = 0;
            for (int k = 0; k < TF_N_CHECK; k++) bad |= check[k] != check[k];
            if (!__builtin_isfinite(*l)) {
                snprintf(s->error, TF_ERR, "model %s: the loss is %g at step %llu; the parameters and optimizer state "
                         "were left unchanged (lower the learning rate, or check the data for inf/nan)",
                         tf_model_name, (double)*l, (unsigned long long)s->steps + 1);
                rc = ${P}_ERROR_NOT_FINITE;
            } else if (bad) {
                size_t n = (size_t)snprintf(s->error, TF_ERR, "model %s: step %llu would make ", tf_model_name,
                                            (unsigned long long)s->steps + 1);
                const char *sep = "";
                for (int k = 0; k < TF_N_CHECK && n < TF_ERR; k++)
                    if (check[k] != check[k]) {
                        const char *label = k < TF_N_LABELS ? tf_check_labels[k] : "a parameter";
                        n += (size_t)snprintf(s->error + n, TF_ERR - n, "%s%s", sep, label);
                        sep = "; ";
                    }
                if (n < TF_ERR)
                    snprintf(s->error + n, TF_ERR - n, " non-finite (the loss, %.6g, is finite); the parameters and "
                             "optimizer state were left unchanged (lower the learning rate, %g)", (double)*l, s->lr);
                rc = ${P}_ERROR_NOT_FINITE;
            } else {
                s->steps++;
                s->error[0] = 0;
            }
        }
    }
    tf_release(s);
    return rc;
}

TF_API int ${p}_predict(${p}_session *s, const void *const *x, void *const *outputs) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (tf_acquire(s)) return ${P}_ERROR_BUSY;
    int rc = tf_check_pointers(x, tf_inputs, ${p}_num_inputs(), "input", s->error);
    if (!rc) rc = tf_check_pointers((const void *const *)outputs, tf_outputs, ${p}_num_outputs(), "output", s->error);
    if (!rc) {
${bind_predict}
        tf_num_threads = s->threads;
        rc = tf_run(s->pin, outputs, s->pconsts, s->arena);
        if (rc) {
            tf_check_message(s->arena, s->error);
            rc = ${P}_ERROR_INDEX;
        } else {
            for (int i = 0; i < tf_n_const_outputs; i++)
                memcpy(outputs[tf_const_outputs[i].output], s->weights + tf_const_outputs[i].offset,
                       tf_const_outputs[i].bytes);
            s->error[0] = 0;
        }
    }
    tf_release(s);
    return rc;
}

TF_API int ${p}_set_learning_rate(${p}_session *s, double lr) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (!(lr >= 0 && lr <= 1e300)) {
        snprintf(s->error, TF_ERR, "model %s: the learning rate must be a finite number >= 0, got %g", tf_model_name,
                 lr);
        return ${P}_ERROR_ARGUMENT;
    }
    if (tf_acquire(s)) return ${P}_ERROR_BUSY;
    s->lr = lr;
    tf_release(s);
    return ${P}_OK;
}

TF_API double ${p}_learning_rate(const ${p}_session *s) { return s ? s->lr : 0.0; }
TF_API uint64_t ${p}_steps(const ${p}_session *s) { return s ? s->steps : 0; }

static int tf_state_arg(${p}_session *s, int i, const void *p) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (i < 0 || i >= TF_N_STATE || p == NULL) {
        snprintf(s->error, TF_ERR, "model %s: state buffer %d does not exist (there are %d) or its pointer is NULL",
                 tf_model_name, i, TF_N_STATE);
        return ${P}_ERROR_ARGUMENT;
    }
    return tf_acquire(s);
}

TF_API int ${p}_get_state(${p}_session *s, int i, void *dst) {
    int rc = tf_state_arg(s, i, dst);
    if (rc) return rc;
    memcpy(dst, s->block + tf_state_off[i], tf_state[i].bytes);
    tf_release(s);
    return ${P}_OK;
}

TF_API int ${p}_set_state(${p}_session *s, int i, const void *src) {
    int rc = tf_state_arg(s, i, src);
    if (rc) return rc;
    memcpy(s->block + tf_state_off[i], src, tf_state[i].bytes);
    tf_release(s);
    return ${P}_OK;
}

TF_API int ${p}_save_state(${p}_session *s, const char *path) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (path == NULL) return tf_fail_text(s->error, ${P}_ERROR_ARGUMENT, "the state file's path is NULL");
    if (tf_acquire(s)) return ${P}_ERROR_BUSY;
    int rc = tf_write_state(s, path);
    if (!rc) s->error[0] = 0;
    tf_release(s);
    return rc;
}

TF_API int ${p}_load_state(${p}_session *s, const char *path) {
    if (s == NULL) return ${P}_ERROR_ARGUMENT;
    if (path == NULL) return tf_fail_text(s->error, ${P}_ERROR_ARGUMENT, "the state file's path is NULL");
    if (tf_acquire(s)) return ${P}_ERROR_BUSY;
    int rc = tf_read_state(s, path, s->error);
    if (!rc) s->error[0] = 0;
    tf_release(s);
    return rc;
}
"""
