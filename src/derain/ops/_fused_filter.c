/* Fused inference kernel of the full-resolution stage (derain.ops.full_resolution), in one pass over the image:
 *
 *   bilinear upsampling of the low-resolution per-pixel kernels (align_corners=False, integer scale)
 *   -> pixel-wise filtering at every dilation (zero outside the image)
 *   -> 3x3 fusion convolution (zero padding) + bias
 *   -> optionally the rain gate: out = image + g * (fused - image), g = sigmoid(up(gate logits)) * whole.
 *
 * The same function as the stage's eager "fast" path (upsample, then derain.ops.pixel_filter's
 * "fast" filtering, then the fusion convolution), in fp32, without materialising the
 * full-resolution kernels (C*k*k channels) or the filtered maps (N*C channels): each thread keeps a
 * row of kernels and a ring of three filtered rows, so the work stays in cache. Inference only (no
 * gradient); the Python side checks shapes and falls back to the eager path where this module is
 * not built.
 *
 * Layouts (all fp32, C-contiguous):
 *   image   (B, C, Hs, P + Ws + P + XB)  the input, already cropped to the taps' reach, with zero
 *                                   columns: P = max(dilations) * (k / 2) left, P + XB right
 *   low     (B, C*T, Hl, Wl)        kernels at 1/scale resolution, T = k*k, channel c*T + k*i + j;
 *                                   or (B, Hl, Wl, C*T) (channels last) with low_nhwc
 *   weight  (C, N*C, 3, 3), bias (C)  the fusion convolution, input channel n*C + c = dilation n, colour c
 *   out     (B, C, Ho, Wo)          Ho <= Hs, Wo <= Ws: the top-left part of the fused result
 *   gate    (B, 1, Hl, Wl) or NULL  the gate's logits at 1/scale resolution (upsampled like the kernels)
 *   whole   (B) or NULL             each image's gate factor (1 where NULL)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Every function of the row loop is inlined into run_job_impl, which is compiled once per instruction
 * set (clones below: AVX-512 = x86-64-v4, AVX2 = x86-64-v3, and the baseline); set_isa picks the clone
 * (derain.ops.fused_filter chooses the best this CPU and PyTorch's capability allow, or DERAIN_FUSED_ISA). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define ISA_CLONES 1
#endif
#define HOT static inline __attribute__((always_inline))

#define MAX_DILATIONS 16
#define MAX_C 4 /* colour channels */
#define XB 32   /* columns per block */
#define KPITCH(Ws) ((((size_t)(Ws) + XB - 1) / XB) * XB) /* kernel row pitch: whole blocks */

typedef struct job {
    const float *image, *low, *weight, *bias, *gate, *whole;
    float *out;
    int B, C, Hs, Ws, P, Hl, Wl, k, N, Ho, Wo, scale;
    int dil[MAX_DILATIONS];
    int low_nhwc; /* low is (B, Hl, Wl, C*T) */
    const int *x0, *x1;  /* horizontal source columns per output column */
    const float *lx;     /* weight of x1 */
    long row_begin, row_end; /* rows of the flattened (B * Ho) output this thread writes */
    int failed;
    void (*run)(struct job *); /* the instruction-set clone of the row loop, chosen once per call */
} job_t;

/* PyTorch's source coordinate for align_corners=False with an explicit scale (upsample_bilinear2d). */
HOT void source_index(int dst, int scale, int in_size, int *i0, int *i1, float *lambda1) {
    float src = (1.0f / (float)scale) * ((float)dst + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
    int i = (int)src;
    *i0 = i;
    *i1 = i + (i < in_size - 1 ? 1 : 0);
    *lambda1 = src - (float)i;
}

/* Horizontal interpolation of one low-resolution row v (Wl) to kr (Ws). Interior columns of the
 * power-of-two scales 2, 4 and 8 run as S contiguous outputs per source column with constant weights
 * (the same weights as source_index, exact in fp32); borders and other scales use the index tables. */
#define INTERIOR(S)                                                                                   \
    HOT void interior_##S(const float *restrict v, float *restrict kr, int m0, int m1) {          \
        float lo[S], hi[S];                                                                           \
        int off[S];                                                                                   \
        for (int r = 0; r < S; r++) {                                                                 \
            float src = ((float)r + 0.5f) / (float)S - 0.5f; /* relative to m; in (-0.5, 0.5) */       \
            off[r] = src < 0.0f ? -1 : 0;                                                             \
            hi[r] = src - (float)off[r];                                                              \
            lo[r] = 1.0f - hi[r];                                                                     \
        }                                                                                             \
        for (int m = m0; m < m1; m++)                                                                 \
            for (int r = 0; r < S; r++) kr[S * m + r] = lo[r] * v[m + off[r]] + hi[r] * v[m + off[r] + 1]; \
    }
INTERIOR(2)
INTERIOR(4)
INTERIOR(8)

HOT void horizontal(const float *restrict v, float *restrict kr, const job_t *job) {
    const int s = job->scale, Ws = job->Ws, Wl = job->Wl;
    const int *restrict x0 = job->x0, *restrict x1 = job->x1;
    const float *restrict lx = job->lx;
    /* source columns m in [1, m1) need no clamping: m - 1 >= 0 and m + 1 <= Wl - 1 */
    int m1 = Wl - 1 < Ws / s ? Wl - 1 : Ws / s;
    if ((s != 2 && s != 4 && s != 8) || m1 <= 1) m1 = 1;
    const int xa = m1 > 1 ? s : Ws, xb = m1 > 1 ? s * m1 : Ws;
    for (int x = 0; x < xa; x++) kr[x] = (1.0f - lx[x]) * v[x0[x]] + lx[x] * v[x1[x]];
    if (s == 2 && m1 > 1) interior_2(v, kr, 1, m1);
    if (s == 4 && m1 > 1) interior_4(v, kr, 1, m1);
    if (s == 8 && m1 > 1) interior_8(v, kr, 1, m1);
    for (int x = xb; x < Ws; x++) kr[x] = (1.0f - lx[x]) * v[x0[x]] + lx[x] * v[x1[x]];
}

/* Full-resolution kernels of image row y (all C*T channels) into krow (C*T, KPITCH(Ws)). */
HOT void kernel_row(const job_t *job, int b, int y, float *restrict vrow, float *restrict krow) {
    const int CT = job->C * job->k * job->k, Hl = job->Hl, Wl = job->Wl, Ws = job->Ws;
    int y0, y1;
    float ly;
    source_index(y, job->scale, Hl, &y0, &y1, &ly);
    const float l0 = 1.0f - ly;
    const float *low = job->low + (size_t)b * CT * Hl * Wl;
    if (job->low_nhwc) { /* the same sums, read pixel by pixel: the vertical pass also transposes */
        const float *restrict r0 = low + (size_t)y0 * Wl * CT, *restrict r1 = low + (size_t)y1 * Wl * CT;
        for (int x = 0; x < Wl; x++)
            for (int ch = 0; ch < CT; ch++) vrow[(size_t)ch * Wl + x] = l0 * r0[(size_t)x * CT + ch] + ly * r1[(size_t)x * CT + ch];
    } else {
        for (int ch = 0; ch < CT; ch++) {
            const float *restrict r0 = low + ((size_t)ch * Hl + y0) * Wl;
            const float *restrict r1 = low + ((size_t)ch * Hl + y1) * Wl;
            float *restrict v = vrow + (size_t)ch * Wl;
            for (int x = 0; x < Wl; x++) v[x] = l0 * r0[x] + ly * r1[x];
        }
    }
    for (int ch = 0; ch < CT; ch++)
        horizontal(vrow + (size_t)ch * Wl, krow + (size_t)ch * KPITCH(Ws), job);
}

/* Filtered row y (N*C channels) into frow, laid out (N*C, Ws + 2 + XB): a zero column before, zeros
 * after. Blocks of XB columns accumulate all taps in registers; the image's zero columns stand for
 * the taps outside it, so no bounds checks in the loop. */
HOT void filtered_row(const job_t *job, int b, int y, const float *restrict krow, float *restrict frow) {
    const int C = job->C, k = job->k, T = k * k, half = k / 2, Ws = job->Ws, Hs = job->Hs, P = job->P;
    const size_t pitch = (size_t)P + Ws + P + XB, kpitch = KPITCH(Ws), fpitch = (size_t)Ws + 2 + XB;
    const float *img = job->image + (size_t)b * C * Hs * pitch;
    for (int n = 0; n < job->N; n++) {
        const int d = job->dil[n];
        for (int c = 0; c < C; c++) {
            float *restrict dst = frow + (size_t)(n * C + c) * fpitch + 1;
            const float *plane = img + (size_t)c * Hs * pitch + P;
            const float *kc = krow + (size_t)c * T * kpitch;
            for (int x0 = 0; x0 < Ws; x0 += XB) {
                float acc[XB];
                /* centre tap first, then the others row-major: the order of the eager "fast" filtering */
                const float *restrict kk = kc + (size_t)(half * k + half) * kpitch + x0;
                const float *restrict src = plane + (size_t)y * pitch + x0;
                for (int x = 0; x < XB; x++) acc[x] = kk[x] * src[x];
                for (int i = 0; i < k; i++) {
                    const int dy = (i - half) * d;
                    if (y + dy < 0 || y + dy >= Hs) continue;
                    for (int j = 0; j < k; j++) {
                        if (i == half && j == half) continue;
                        const float *restrict kt = kc + (size_t)(i * k + j) * kpitch + x0;
                        const float *restrict sp = plane + (size_t)(y + dy) * pitch + x0 + (j - half) * d;
                        for (int x = 0; x < XB; x++) acc[x] += kt[x] * sp[x];
                    }
                }
                const int m = Ws - x0 < XB ? Ws - x0 : XB;
                for (int x = 0; x < m; x++) dst[x0 + x] = acc[x];
            }
        }
    }
}

/* Output row y of batch b from the three filtered rows around it (NULL = outside the image).
 * Blocks of XB columns: every filtered value loaded once per block feeds all C outputs, whose
 * accumulators stay in registers when C is a constant (the colour case is specialised). */
HOT void fused_row_impl(const job_t *job, int b, int y, const float *rows[3],
                                                                 const float *restrict grow, const int C) {
    const int NC = job->N * C, Ws = job->Ws, Wo = job->Wo, P = job->P;
    const size_t fpitch = (size_t)Ws + 2 + XB, pitch = (size_t)P + Ws + P + XB;
    for (int x0 = 0; x0 < Wo; x0 += XB) {
        float acc[MAX_C][XB];
        for (int co = 0; co < C; co++)
            for (int x = 0; x < XB; x++) acc[co][x] = job->bias[co];
        for (int ci = 0; ci < NC; ci++) {
            for (int a = 0; a < 3; a++) {
                if (!rows[a]) continue;
                const float *restrict f = rows[a] + ci * fpitch + x0; /* f[x] = column x0 + x - 1 */
                for (int t = 0; t < 3; t++) {
                    for (int co = 0; co < C; co++) {
                        const float wt = job->weight[((size_t)co * NC + ci) * 9 + a * 3 + t];
                        for (int x = 0; x < XB; x++) acc[co][x] += wt * f[x + t];
                    }
                }
            }
        }
        const int m = Wo - x0 < XB ? Wo - x0 : XB;
        for (int co = 0; co < C; co++) {
            float *restrict o = job->out + (((size_t)b * C + co) * job->Ho + y) * Wo + x0;
            if (grow) { /* the rain gate: image + g * (fused - image) */
                const float *restrict src = job->image + (((size_t)b * C + co) * job->Hs + y) * pitch + P + x0;
                for (int x = 0; x < m; x++) o[x] = src[x] + grow[x0 + x] * (acc[co][x] - src[x]);
            } else {
                for (int x = 0; x < m; x++) o[x] = acc[co][x];
            }
        }
    }
}

HOT void fused_row(const job_t *job, int b, int y, const float *rows[3], const float *grow) {
    if (job->C == 3)
        fused_row_impl(job, b, y, rows, grow, 3);
    else
        fused_row_impl(job, b, y, rows, grow, job->C);
}

/* The gate of output row y of batch b into grow (Ws): sigmoid of the upsampled logits times the image's factor. */
HOT void gate_row(const job_t *job, int b, int y, float *restrict gv, float *restrict grow) {
    const int Hl = job->Hl, Wl = job->Wl, Ws = job->Ws;
    int y0, y1;
    float ly;
    source_index(y, job->scale, Hl, &y0, &y1, &ly);
    const float *restrict r0 = job->gate + ((size_t)b * Hl + y0) * Wl, *restrict r1 = job->gate + ((size_t)b * Hl + y1) * Wl;
    for (int x = 0; x < Wl; x++) gv[x] = (1.0f - ly) * r0[x] + ly * r1[x];
    horizontal(gv, grow, job);
    const float whole = job->whole ? job->whole[b] : 1.0f;
    for (int x = 0; x < Ws; x++) grow[x] = whole / (1.0f + expf(-grow[x]));
}

HOT void run_job_impl(job_t *job) {
    const int CT = job->C * job->k * job->k, NC = job->N * job->C;
    const size_t frow_size = (size_t)NC * ((size_t)job->Ws + 2 + XB), krow_size = (size_t)CT * KPITCH(job->Ws);
    float *vrow = malloc(sizeof(float) * (size_t)CT * job->Wl);
    float *krow = calloc(krow_size, sizeof(float)); /* tails (past Ws) stay zero */
    float *ring = calloc(frow_size * 3, sizeof(float)); /* zero tails stay zero */
    float *gv = job->gate ? malloc(sizeof(float) * (size_t)job->Wl) : NULL;
    float *grow = job->gate ? malloc(sizeof(float) * KPITCH(job->Ws)) : NULL;
    if (!vrow || !krow || !ring || (job->gate && (!gv || !grow))) {
        job->failed = 1;
        free(vrow);
        free(krow);
        free(ring);
        free(gv);
        free(grow);
        return;
    }
    long tag[3] = {-1, -1, -1}; /* which (b * Hs + y) each ring slot holds */
    for (long r = job->row_begin; r < job->row_end; r++) {
        const int b = (int)(r / job->Ho), y = (int)(r % job->Ho);
        const float *rows[3];
        for (int a = 0; a < 3; a++) {
            const int yy = y + a - 1;
            if (yy < 0 || yy >= job->Hs) {
                rows[a] = NULL;
                continue;
            }
            const long key = (long)b * job->Hs + yy;
            const int slot = (int)(key % 3);
            float *f = ring + frow_size * slot;
            if (tag[slot] != key) {
                kernel_row(job, b, yy, vrow, krow);
                filtered_row(job, b, yy, krow, f);
                tag[slot] = key;
            }
            rows[a] = f;
        }
        if (grow) gate_row(job, b, y, gv, grow);
        fused_row(job, b, y, rows, grow);
    }
    free(vrow);
    free(krow);
    free(ring);
    free(gv);
    free(grow);
}

/* The clones of the row loop, one per instruction set, and the one in use. */
typedef void (*run_fn)(job_t *);
#ifdef ISA_CLONES
__attribute__((target("arch=x86-64-v4"))) static void run_job_avx512(job_t *job) { run_job_impl(job); }
__attribute__((target("arch=x86-64-v3"))) static void run_job_avx2(job_t *job) { run_job_impl(job); }
#endif
static void run_job_default(job_t *job) { run_job_impl(job); }

typedef struct {
    const char *name;
    run_fn fn;
} isa_t;
static const isa_t ISAS[] = { /* best first */
#ifdef ISA_CLONES
    {"avx512", run_job_avx512},
    {"avx2", run_job_avx2},
#endif
    {"default", run_job_default},
};
#define N_ISAS ((int)(sizeof ISAS / sizeof ISAS[0]))
static int isa_index = N_ISAS - 1; /* the baseline until set_isa; read and written with the GIL held */

static int isa_supported(int i) {
#ifdef ISA_CLONES
    __builtin_cpu_init();
    if (ISAS[i].fn == run_job_avx512) return __builtin_cpu_supports("x86-64-v4") > 0;
    if (ISAS[i].fn == run_job_avx2) return __builtin_cpu_supports("x86-64-v3") > 0;
#endif
    return 1;
}

static void *run_job(void *arg) {
    job_t *job = (job_t *)arg;
    job->run(job);
    return NULL;
}

/* Optional: libgomp's GOMP_parallel and omp_get_thread_num from the OpenMP runtime PyTorch loaded
 * (set by derain.ops.fused_filter at import). Running on PyTorch's team matters on a machine with
 * few cores: its threads spin for a while after each operator, so fresh threads would compete with
 * them for the cores instead of running. */
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn gomp_parallel = NULL;
static omp_int_fn omp_thread_num = NULL, omp_num_threads = NULL;

typedef struct {
    job_t *jobs;
    int n;
} team_t;

static void team_worker(void *arg) {
    team_t *team = (team_t *)arg;
    /* a team smaller than asked for (nested parallelism, limits): members share out all the jobs */
    const int size = omp_num_threads();
    for (int j = omp_thread_num(); j < team->n; j += size > 0 ? size : team->n) run_job(&team->jobs[j]);
}

static PyObject *set_openmp(PyObject *self, PyObject *args) {
    unsigned long long p_parallel, p_thread_num, p_num_threads;
    if (!PyArg_ParseTuple(args, "KKK", &p_parallel, &p_thread_num, &p_num_threads)) return NULL;
    gomp_parallel = (gomp_parallel_fn)(uintptr_t)p_parallel;
    omp_thread_num = (omp_int_fn)(uintptr_t)p_thread_num;
    omp_num_threads = (omp_int_fn)(uintptr_t)p_num_threads;
    Py_RETURN_NONE;
}

static PyObject *isas(PyObject *self, PyObject *noargs) {
    PyObject *names = PyList_New(0);
    for (int i = 0; names && i < N_ISAS; i++) {
        if (!isa_supported(i)) continue;
        PyObject *name = PyUnicode_FromString(ISAS[i].name);
        if (!name || PyList_Append(names, name) < 0) Py_CLEAR(names);
        Py_XDECREF(name);
    }
    if (!names) return NULL;
    PyObject *result = PyList_AsTuple(names);
    Py_DECREF(names);
    return result;
}

static PyObject *get_isa(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(ISAS[isa_index].name); }

static PyObject *set_isa(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    for (int i = 0; i < N_ISAS; i++) {
        if (strcmp(ISAS[i].name, name) != 0) continue;
        if (!isa_supported(i)) {
            PyErr_Format(PyExc_ValueError, "set_isa: this CPU does not run the %s clone", name);
            return NULL;
        }
        isa_index = i;
        Py_RETURN_NONE;
    }
    PyErr_Format(PyExc_ValueError, "set_isa: no clone named %s", name);
    return NULL;
}

static PyObject *filter_fuse(PyObject *self, PyObject *args) {
    unsigned long long p_image, p_low, p_weight, p_bias, p_out, p_gate = 0, p_whole = 0;
    int B, C, Hs, Ws, P, Hl, Wl, k, Ho, Wo, scale, threads, low_nhwc = 0;
    PyObject *dilations;
    if (!PyArg_ParseTuple(args, "KKKKKiiiiiiiiiiiO!i|KKp", &p_image, &p_low, &p_weight, &p_bias, &p_out, &B, &C, &Hs,
                          &Ws, &P, &Hl, &Wl, &k, &Ho, &Wo, &scale, &PyTuple_Type, &dilations, &threads, &p_gate, &p_whole,
                          &low_nhwc))
        return NULL;
    if (p_whole && !p_gate) {
        PyErr_SetString(PyExc_ValueError, "filter_fuse: an image factor needs the gate's logits");
        return NULL;
    }
    const Py_ssize_t N = PyTuple_GET_SIZE(dilations);
    if (N < 1 || N > MAX_DILATIONS || B < 1 || C < 1 || C > MAX_C || k < 1 || k % 2 == 0 || scale < 1 || Ho < 1 || Wo < 1 ||
        Ho > Hs || Wo > Ws || Hl < 1 || Wl < 1 || (long)Hl * scale < Hs || (long)Wl * scale < Ws) {
        PyErr_SetString(PyExc_ValueError, "filter_fuse: inconsistent sizes");
        return NULL;
    }
    job_t base;
    memset(&base, 0, sizeof base);
    for (Py_ssize_t n = 0; n < N; n++) {
        long d = PyLong_AsLong(PyTuple_GET_ITEM(dilations, n));
        if (d < 1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "filter_fuse: dilations must be >= 1");
            return NULL;
        }
        base.dil[n] = (int)d;
        if (d * (k / 2) > P) {
            PyErr_SetString(PyExc_ValueError, "filter_fuse: the image's zero columns are narrower than the taps' reach");
            return NULL;
        }
    }
    base.image = (const float *)(uintptr_t)p_image;
    base.low = (const float *)(uintptr_t)p_low;
    base.weight = (const float *)(uintptr_t)p_weight;
    base.bias = (const float *)(uintptr_t)p_bias;
    base.out = (float *)(uintptr_t)p_out;
    base.gate = (const float *)(uintptr_t)p_gate;   /* NULL (0): no gate */
    base.whole = (const float *)(uintptr_t)p_whole; /* NULL (0): factor 1 */
    base.B = B, base.C = C, base.Hs = Hs, base.Ws = Ws, base.P = P, base.Hl = Hl, base.Wl = Wl, base.k = k, base.N = (int)N;
    base.Ho = Ho, base.Wo = Wo, base.scale = scale, base.low_nhwc = low_nhwc;
    base.run = ISAS[isa_index].fn; /* before the GIL is released: a set_isa meanwhile affects the next call only */
    int *x0 = malloc(sizeof(int) * Ws), *x1 = malloc(sizeof(int) * Ws);
    float *lx = malloc(sizeof(float) * Ws);
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    job_t jobs[64];
    pthread_t tids[64];
    int started[64] = {0};
    if (!x0 || !x1 || !lx) {
        free(x0), free(x1), free(lx);
        return PyErr_NoMemory();
    }
    for (int x = 0; x < Ws; x++) source_index(x, scale, Wl, &x0[x], &x1[x], &lx[x]);
    base.x0 = x0, base.x1 = x1, base.lx = lx;
    const long rows = (long)B * Ho;
    if (threads > rows) threads = (int)rows;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        jobs[t] = base;
        jobs[t].row_begin = rows * t / threads;
        jobs[t].row_end = rows * (t + 1) / threads;
    }
    if (gomp_parallel && omp_thread_num && omp_num_threads && threads > 1) {
        /* the OpenMP team PyTorch's own operators use: its threads are already awake */
        team_t team = {jobs, threads};
        gomp_parallel(team_worker, &team, (unsigned)threads, 0);
    } else {
        for (int t = 1; t < threads; t++) started[t] = pthread_create(&tids[t], NULL, run_job, &jobs[t]) == 0;
        run_job(&jobs[0]);
        for (int t = 1; t < threads; t++) {
            if (started[t])
                pthread_join(tids[t], NULL);
            else
                run_job(&jobs[t]); /* could not start a thread: do its rows here */
        }
    }
    for (int t = 0; t < threads; t++) failed |= jobs[t].failed;
    Py_END_ALLOW_THREADS
    free(x0), free(x1), free(lx);
    if (failed) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"filter_fuse", filter_fuse, METH_VARARGS,
     "filter_fuse(image, low, weight, bias, out, B, C, Hs, Ws, P, Hl, Wl, k, Ho, Wo, scale, dilations, threads[, gate, whole, low_nhwc])\n"
     "Raw-pointer fused kernel upsampling + pixel-wise dilation filtering + 3x3 fusion (+ the rain gate) (fp32). "
     "Use derain.ops.fused_filter.upsample_filter_fuse, which checks the tensors."},
    {"isas", isas, METH_NOARGS, "isas() -> the instruction-set clones this CPU runs, best first."},
    {"isa", get_isa, METH_NOARGS, "isa() -> the clone in use."},
    {"set_isa", set_isa, METH_VARARGS, "set_isa(name): run the named clone (ValueError where this CPU cannot)."},
    {"set_openmp", set_openmp, METH_VARARGS,
     "set_openmp(GOMP_parallel, omp_get_thread_num, omp_get_num_threads addresses): run on that OpenMP "
     "runtime's team (0, 0, 0: own threads)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fused_filter", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fused_filter(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "BLOCK", XB) < 0 || PyModule_AddIntConstant(m, "MAX_CHANNELS", MAX_C) < 0 ||
              PyModule_AddIntConstant(m, "MAX_DILATIONS", MAX_DILATIONS) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
