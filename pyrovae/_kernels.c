/* Native kernels for evaluating a VAE (see pyrovae/kernels.py): the softplus, the Bernoulli
 * log-density of logits, and a whole MLP decoder with its Bernoulli log-density (at the end).
 *
 * With K = 5000 importance samples of a 784-pixel image, the Bernoulli log-density reads a
 * 5000 x 784 array of logits, and torch evaluates log(1 + e^l) over it in four vectorized passes
 * (exp, add, log, sum). The kernels here take one pass over rows already in cache and use
 *
 *     log(1 + e^l) = max(l, 0) + log(1 + e^-|l|),
 *     sum_d log(1 + t_d) = log prod_d (1 + t_d),   t_d = e^-|l_d| in (0, 1],
 *
 * so that a row costs one exponential per element and one logarithm per 16 elements. The
 * products are kept below 2^33 by moving their exponent bits into an integer count every 32
 * factors (exact). The exponential and logarithm are the Cephes single-precision polynomials
 * (S. L. Moshier, Methods and Programs for Mathematical Functions, 1989), written on GCC vector
 * types so that every element of a 16-lane vector takes the same branch-free path; the compiler
 * emits one copy of each kernel per instruction set (AVX-512, AVX2, baseline) and the loader picks
 * the one the processor has.
 *
 * Rows are shared among the threads of OpenMP: the extension links libgomp, which resolves to
 * the copy torch has already loaded, so the kernels run on torch's own thread pool (and follow
 * torch.set_num_threads) rather than contending with it.
 *
 * Every function takes addresses and sizes; kernels.py checks dtype, device and layout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#endif
#ifndef CLONES
#define CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

#define LANES 16
/* below this many elements a call runs on one thread: the cost of waking the pool */
#define GRAIN 32768
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));

INLINE vf splat(float c) { return (vf){} + c; }
INLINE vf select_(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }

/* the first width (<= LANES) floats at p into the lanes of *v, the others left as they are: one
 * vector load for a full vector */
INLINE void load(vf *v, const float *p, long width) {
    if (width == LANES)
        memcpy(v, p, sizeof *v);
    else
        memcpy(v, p, sizeof(float) * width);
}

INLINE void store(float *p, vf v, long width) {
    if (width == LANES)
        memcpy(p, &v, sizeof v);
    else
        memcpy(p, &v, sizeof(float) * width);
}

/* e^-a for a in [0, 87], and 0 for larger a (or NaN): Cephes expf, range reduction by ln 2 */
INLINE vf exp_neg(vf a) {
    vf y = -a;
    vf n = (y * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    vf r = y - n * 0.693359375f + n * 2.12194440e-4f;
    vf p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    vi bits = (__builtin_convertvector(n, vi) + 127) << 23; /* 2^n, n >= -126 */
    return (vf)((vi)(p * (vf)bits) & (a < 87.0f));
}

/* log w for finite w > 0, normal: Cephes logf */
INLINE vf log_pos(vf w) {
    vi bits = (vi)w;
    vi e = ((bits >> 23) & 0xff) - 127;
    vf m = (vf)((bits & 0x007fffff) | 0x3f800000); /* w = m 2^e, m in [1, 2) */
    vi big = m > 1.41421356f;                       /* then use m / 2 and e + 1 */
    m = select_(big, 0.5f * m, m);
    vf x = m - 1.0f;
    vf ef = __builtin_convertvector(e - big, vf);
    vf z = x * x;
    vf p = splat(7.0376836292e-2f);
    p = p * x - 1.1514610310e-1f;
    p = p * x + 1.1676998740e-1f;
    p = p * x - 1.2420140846e-1f;
    p = p * x + 1.4249322787e-1f;
    p = p * x - 1.6668057665e-1f;
    p = p * x + 2.0000714765e-1f;
    p = p * x - 2.4999993993e-1f;
    p = p * x + 3.3333331174e-1f;
    vf y = x * z * p - 0.5f * z - ef * 2.12194440e-4f;
    return x + y + ef * 0.693359375f;
}

/* log(1 + e^v) elementwise; NaN stays NaN */
INLINE vf softplus(vf v) {
    vf a = (vf)((vi)v & 0x7fffffff);
    vf y = (vf)((vi)v & (v > 0.0f)) + log_pos(1.0f + exp_neg(a));
    return select_(v == v, y, v);
}

/* one vector v of a row into the accumulators of rows_serial; dot (the value's term) is NULL
 * for the softplus sum alone */
INLINE void accumulate(vf v, vf u, vf *lin, vf *dot, vf *prod, vi *nan) {
    vf a = (vf)((vi)v & 0x7fffffff);
    *nan |= v != v;
    *lin += (vf)((vi)v & (v > 0.0f));
    if (dot)
        *dot += (vf)((vi)(u * v) & (u != 0.0f)); /* x = 0 contributes 0, also against l = -inf */
    *prod *= 1.0f + exp_neg(a);
}

/* out[i] = sum_j value[(first + i) % vrows][j] y[i][j] - log(1 + e^y[i][j]) for rows i in
 * [0, rows), where y[i] = x[i] + bias (bias may be NULL); without value (NULL),
 * out[i] = sum_j log(1 + e^y[i][j]) */
CLONES static void rows_serial(const float *x, long rows, long cols, long stride, const float *bias,
                               const float *value, long vrows, long vstride, long first, float *out) {
    for (long i = 0; i < rows; i++) {
        const float *row = x + i * stride;
        const float *vrow = value ? value + ((first + i) % vrows) * vstride : NULL;
        vf prod = splat(1.0f), lin = splat(0.0f), dot = splat(0.0f), u = splat(0.0f), c = splat(0.0f);
        vi exponent = (vi){}, nan = (vi){};
        long j = 0;
        for (; j + LANES <= cols; j += LANES) {
            vf v;
            memcpy(&v, row + j, sizeof v);
            if (bias) {
                memcpy(&c, bias + j, sizeof c);
                v += c;
            }
            if (vrow)
                memcpy(&u, vrow + j, sizeof u);
            accumulate(v, u, &lin, vrow ? &dot : NULL, &prod, &nan);
            if (j % (32 * LANES) == 31 * LANES) { /* keep the products below 2^33, exactly */
                vi e = (vi)prod;
                exponent += ((e >> 23) & 0xff) - 127;
                prod = (vf)((e & 0x007fffff) | 0x3f800000);
            }
        }
        if (j < cols) { /* the last, partial vector, padded with -inf: log(1 + 0) */
            vf v = splat(-INFINITY);
            u = c = splat(0.0f);
            memcpy(&v, row + j, sizeof(float) * (cols - j));
            if (bias)
                memcpy(&c, bias + j, sizeof(float) * (cols - j));
            if (vrow)
                memcpy(&u, vrow + j, sizeof(float) * (cols - j));
            accumulate(v + c, u, &lin, vrow ? &dot : NULL, &prod, &nan);
        }
        vf lanes = lin + log_pos(prod) + __builtin_convertvector(exponent, vf) * 0.693147180559945309f;
        float total = 0.0f, linear = 0.0f;
        int bad = 0;
        for (int k = 0; k < LANES; k++)
            total += lanes[k], linear += dot[k], bad |= nan[k];
        out[i] = bad ? NAN : (vrow ? linear - total : total);
    }
}

CLONES static void softplus_serial(const float *x, float *y, long n) {
    for (long j = 0; j < n; j += LANES) {
        long width = n - j < LANES ? n - j : LANES;
        vf v = splat(0.0f);
        load(&v, x + j, width);
        store(y + j, softplus(v), width);
    }
}

static void rows_parallel(const float *x, long rows, long cols, long stride, const float *value,
                          long vrows, long vstride, float *out) {
    if (rows * cols < GRAIN) {
        rows_serial(x, rows, cols, stride, NULL, value, vrows, vstride, 0, out);
        return;
    }
#pragma omp parallel
    {
        long nt = omp_get_num_threads(), id = omp_get_thread_num();
        long lo = rows * id / nt, hi = rows * (id + 1) / nt;
        rows_serial(x + lo * stride, hi - lo, cols, stride, NULL, value, vrows, vstride, lo, out + lo);
    }
}

/* ---------------------------------------------------------------------------------------------
 * A whole MLP decoder and its Bernoulli log-density, tile by tile.
 *
 * For x of shape (rows, d0) and layers y = act(W y + b), it returns for each row
 * sum_j value[row % vrows][j] l_j - log(1 + e^l_j) of the last layer's output l, without storing
 * more than one tile of rows of any layer. Each thread of the pool takes its share of the tiles;
 * the matrix products are MKL's, reached in the torch library already loaded (the extension has
 * no BLAS of its own), with the weights packed once per call and run single-threaded within
 * each thread. Where MKL is not found (torch built without it), blas_ready() is 0 and pyrovae
 * decodes through torch. MKL's LP64 interface (32-bit integers) is the one under these names;
 * its ILP64 one has the suffix _64.
 */
#define TILE 128
#define MAX_LAYERS 16
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112, PACKED = 151, B_MATRIX = 162 };
enum { ACT_NONE = 0, ACT_SOFTPLUS = 1, ACT_RELU = 2 };

typedef size_t (*pack_size_t)(int, int, int, int);
typedef void (*pack_t)(int, int, int, int, int, int, float, const float *, int, float *);
typedef void (*compute_t)(int, int, int, int, int, int, const float *, int, const float *, int, float, float *,
                          int);
typedef void (*sgemm_t)(const char *, const char *, const int *, const int *, const int *, const float *,
                        const float *, const int *, const float *, const int *, const float *, float *,
                        const int *);
typedef int (*threads_t)(int);

static struct {
    int tried, ready;
    pack_size_t pack_size;
    pack_t pack;
    compute_t compute;
    sgemm_t sgemm;
    threads_t threads_local;
} blas;

static int blas_ready(void) {
    if (!blas.tried) {
        blas.tried = 1;
        void *h = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
        if (h) {
            blas.pack_size = (pack_size_t)dlsym(h, "cblas_sgemm_pack_get_size");
            blas.pack = (pack_t)dlsym(h, "cblas_sgemm_pack");
            blas.compute = (compute_t)dlsym(h, "cblas_sgemm_compute");
            blas.sgemm = (sgemm_t)dlsym(h, "sgemm_");
            blas.threads_local = (threads_t)dlsym(h, "MKL_Set_Num_Threads_Local");
            blas.ready = blas.pack_size && blas.pack && blas.compute && blas.sgemm && blas.threads_local;
        }
    }
    return blas.ready;
}

typedef struct {
    const float *weight, *bias; /* (out, in) row-major; (out,) */
    int in, out, act;
    float *packed; /* the weight packed as MKL's B matrix for TILE rows */
} layer_t;

/* c (m x out, row-major) = a (m x in, lda) W^T */
static void layer_product(const layer_t *l, const float *a, int lda, int m, float *c) {
    if (m == TILE) {
        blas.compute(ROW_MAJOR, NO_TRANS, PACKED, m, l->out, l->in, a, lda, l->packed, l->out, 0.0f, c, l->out);
    } else { /* the last, partial tile: column-major c^T = W a^T */
        const float one = 1.0f, zero = 0.0f;
        blas.sgemm("T", "N", &l->out, &m, &l->in, &one, l->weight, &l->in, a, &lda, &zero, c, &l->out);
    }
}

/* y = act(y + bias) over m rows of n, in place */
CLONES static void bias_act_serial(float *y, long m, long n, const float *bias, int act) {
    for (long i = 0; i < m; i++) {
        float *row = y + i * n;
        for (long j = 0; j < n; j += LANES) {
            long width = n - j < LANES ? n - j : LANES;
            vf v = splat(0.0f), c = splat(0.0f);
            load(&v, row + j, width);
            load(&c, bias + j, width);
            v += c;
            if (act == ACT_SOFTPLUS)
                v = softplus(v);
            else if (act == ACT_RELU)
                v = select_(v < 0.0f, splat(0.0f), v);
            store(row + j, v, width);
        }
    }
}

/* 0 on success, -1 if out of memory */
static int mlp_bernoulli(const float *x, long rows, long xstride, layer_t *layers, int nl, const float *value,
                         long vrows, long vstride, float *out) {
    int width = 0, failed = 0;
    for (int l = 0; l < nl; l++) {
        size_t size = blas.pack_size(B_MATRIX, TILE, layers[l].out, layers[l].in);
        layers[l].packed = malloc(size);
        if (!layers[l].packed)
            failed = 1;
        else
            blas.pack(ROW_MAJOR, B_MATRIX, TRANS, TILE, layers[l].out, layers[l].in, 1.0f, layers[l].weight,
                      layers[l].in, layers[l].packed);
        if (layers[l].out > width)
            width = layers[l].out;
    }
    const long tiles = (rows + TILE - 1) / TILE;
    if (failed)
        goto done;
#pragma omp parallel if (tiles > 1) reduction(| : failed)
    {
        long nt = omp_get_num_threads(), id = omp_get_thread_num();
        float *buf = malloc(sizeof(float) * 2 * TILE * (size_t)width);
        if (!buf) {
            failed = 1;
        } else {
            int saved = blas.threads_local(1);
            for (long t = tiles * id / nt; t < tiles * (id + 1) / nt; t++) {
                long lo = t * TILE;
                int m = (int)(rows - lo < TILE ? rows - lo : TILE);
                const float *a = x + lo * xstride;
                int lda = (int)xstride;
                float *c = buf;
                for (int l = 0; l < nl; l++) {
                    c = buf + (l % 2) * TILE * (size_t)width;
                    layer_product(&layers[l], a, lda, m, c);
                    if (l < nl - 1)
                        bias_act_serial(c, m, layers[l].out, layers[l].bias, layers[l].act);
                    a = c, lda = layers[l].out;
                }
                const layer_t *last = &layers[nl - 1];
                rows_serial(c, m, last->out, last->out, last->bias, value, vrows, vstride, lo, out + lo);
            }
            blas.threads_local(saved);
            free(buf);
        }
    }
done:
    for (int l = 0; l < nl; l++)
        free(layers[l].packed);
    return failed ? -1 : 0;
}

static PyObject *py_blas_ready(PyObject *self, PyObject *args) { return PyBool_FromLong(blas_ready()); }

/* mlp_bernoulli(x, rows, d0, xstride, layers, value, vrows, vstride, out) with layers a sequence of
 * (weight, bias, out, in, act) */
static PyObject *py_mlp_bernoulli(PyObject *self, PyObject *args) {
    unsigned long long x, value, out;
    Py_ssize_t rows, xstride, vrows, vstride;
    int d0;
    PyObject *seq;
    layer_t layers[MAX_LAYERS];
    if (!PyArg_ParseTuple(args, "KninOKnnK", &x, &rows, &d0, &xstride, &seq, &value, &vrows, &vstride, &out))
        return NULL;
    if (!blas_ready()) {
        PyErr_SetString(PyExc_RuntimeError, "mlp_bernoulli: MKL was not found in the loaded torch library");
        return NULL;
    }
    Py_ssize_t nl = PySequence_Length(seq);
    if (nl < 1 || nl > MAX_LAYERS || vrows < 1) {
        PyErr_SetString(PyExc_ValueError, "mlp_bernoulli: 1 to 16 layers and positive vrows");
        return NULL;
    }
    for (Py_ssize_t l = 0; l < nl; l++) {
        PyObject *item = PySequence_GetItem(seq, l);
        unsigned long long w, b;
        int ok = item && PyArg_ParseTuple(item, "KKiii", &w, &b, &layers[l].out, &layers[l].in, &layers[l].act);
        Py_XDECREF(item);
        if (!ok)
            return NULL;
        layers[l].weight = (const float *)w, layers[l].bias = (const float *)b;
        if (layers[l].in != (l ? layers[l - 1].out : d0) || layers[l].out < 1) {
            PyErr_SetString(PyExc_ValueError, "mlp_bernoulli: each layer's input size is the last one's output");
            return NULL;
        }
    }
    int status;
    Py_BEGIN_ALLOW_THREADS status = mlp_bernoulli((const float *)x, rows, xstride, layers, (int)nl,
                                                  (const float *)value, vrows, vstride, (float *)out);
    Py_END_ALLOW_THREADS if (status) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_softplus_rowsum(PyObject *self, PyObject *args) {
    unsigned long long x, out;
    Py_ssize_t rows, cols, stride;
    if (!PyArg_ParseTuple(args, "KnnnK", &x, &rows, &cols, &stride, &out))
        return NULL;
    Py_BEGIN_ALLOW_THREADS rows_parallel((const float *)x, rows, cols, stride, NULL, 1, 0, (float *)out);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_bernoulli_rowsum(PyObject *self, PyObject *args) {
    unsigned long long x, value, out;
    Py_ssize_t rows, cols, stride, vrows, vstride;
    if (!PyArg_ParseTuple(args, "KnnnKnnK", &x, &rows, &cols, &stride, &value, &vrows, &vstride, &out))
        return NULL;
    if (vrows < 1) {
        PyErr_SetString(PyExc_ValueError, "bernoulli_rowsum: vrows must be positive");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS rows_parallel((const float *)x, rows, cols, stride, (const float *)value, vrows,
                                         vstride, (float *)out);
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyObject *py_softplus(PyObject *self, PyObject *args) {
    unsigned long long x, y;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "KKn", &x, &y, &n))
        return NULL;
    Py_BEGIN_ALLOW_THREADS if (n < GRAIN) { softplus_serial((const float *)x, (float *)y, n); }
    else {
#pragma omp parallel
        {
            long nt = omp_get_num_threads(), id = omp_get_thread_num();
            long lo = n * id / nt / LANES * LANES, hi = id + 1 == nt ? n : n * (id + 1) / nt / LANES * LANES;
            softplus_serial((const float *)x + lo, (float *)y + lo, hi - lo);
        }
    }
    Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"softplus_rowsum", py_softplus_rowsum, METH_VARARGS,
     "softplus_rowsum(x, rows, cols, stride, out): out[i] = sum_j log(1 + exp(x[i, j])), float32"},
    {"bernoulli_rowsum", py_bernoulli_rowsum, METH_VARARGS,
     "bernoulli_rowsum(x, rows, cols, stride, value, vrows, vstride, out): "
     "out[i] = sum_j value[i % vrows, j] x[i, j] - log(1 + exp(x[i, j])), float32"},
    {"blas_ready", py_blas_ready, METH_NOARGS, "blas_ready(): whether MKL was found for mlp_bernoulli"},
    {"mlp_bernoulli", py_mlp_bernoulli, METH_VARARGS,
     "mlp_bernoulli(x, rows, d0, xstride, layers, value, vrows, vstride, out): an MLP's Bernoulli "
     "log-density per row; layers: (weight, bias, out, in, act) with act 0 none, 1 softplus, 2 relu"},
    {"softplus", py_softplus, METH_VARARGS, "softplus(x, y, n): y = log(1 + exp(x)), float32; y may be x"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Native kernels of pyrovae.kernels", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
