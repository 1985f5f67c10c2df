/* Native kernels for the elementwise work of evaluating a VAE (see pyrovae/kernels.py).
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
#include <math.h>
#include <omp.h>
#include <stdint.h>
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

/* out[i] = sum_j value[i % vrows][j] x[i][j] - log(1 + e^x[i][j]) for rows i in [lo, hi); without
 * value (NULL), out[i] = sum_j log(1 + e^x[i][j]) */
CLONES static void rows_serial(const float *x, long lo, long hi, long cols, long stride, const float *value,
                               long vrows, long vstride, float *out) {
    const long full = cols / LANES, rest = cols - full * LANES;
    for (long i = lo; i < hi; i++) {
        const float *row = x + i * stride;
        const float *vrow = value ? value + (i % vrows) * vstride : NULL;
        vf prod = splat(1.0f), lin = splat(0.0f), dot = splat(0.0f);
        vi exponent = (vi){}, nan = (vi){};
        for (long j = 0; j <= full; j++) {
            vf v, u = splat(0.0f);
            if (j < full) {
                memcpy(&v, row + j * LANES, sizeof v);
                if (vrow)
                    memcpy(&u, vrow + j * LANES, sizeof u);
            } else if (rest) {
                v = splat(-INFINITY); /* contributes log(1 + 0) */
                memcpy(&v, row + j * LANES, sizeof(float) * rest);
                if (vrow)
                    memcpy(&u, vrow + j * LANES, sizeof(float) * rest);
            } else {
                break;
            }
            vf a = (vf)((vi)v & 0x7fffffff);
            nan |= v != v;
            lin += (vf)((vi)v & (v > 0.0f));
            dot += (vf)((vi)(u * v) & (u != 0.0f)); /* 0 * -inf of the padding is 0 */
            prod *= 1.0f + exp_neg(a);
            if (j % 32 == 31) {
                vi b = (vi)prod;
                exponent += ((b >> 23) & 0xff) - 127;
                prod = (vf)((b & 0x007fffff) | 0x3f800000);
            }
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
    const long full = n / LANES, rest = n - full * LANES;
    for (long j = 0; j < full; j++) {
        vf v;
        memcpy(&v, x + j * LANES, sizeof v);
        v = softplus(v);
        memcpy(y + j * LANES, &v, sizeof v);
    }
    if (rest) {
        vf v = splat(0.0f);
        memcpy(&v, x + full * LANES, sizeof(float) * rest);
        v = softplus(v);
        memcpy(y + full * LANES, &v, sizeof(float) * rest);
    }
}

static void rows_parallel(const float *x, long rows, long cols, long stride, const float *value,
                          long vrows, long vstride, float *out) {
    if (rows * cols < GRAIN) {
        rows_serial(x, 0, rows, cols, stride, value, vrows, vstride, out);
        return;
    }
#pragma omp parallel
    {
        long nt = omp_get_num_threads(), id = omp_get_thread_num();
        rows_serial(x, rows * id / nt, rows * (id + 1) / nt, cols, stride, value, vrows, vstride, out);
    }
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
    {"softplus", py_softplus, METH_VARARGS, "softplus(x, y, n): y = log(1 + exp(x)), float32; y may be x"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", "Native kernels of pyrovae.kernels", -1,
                                    methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
