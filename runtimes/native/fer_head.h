/* fer_head: the C ABI of a compiled tree head (docs/architecture.md, "The compiled head's C ABI").
 *
 * The library is built from a bundle's head sources (TL2cgen-generated C plus fer_head.c) and
 * describes itself, so a loader can check it against the bundle's manifest before using it.
 * Every function is thread-safe: nothing writes global state.
 *
 * Missing values: a NaN feature is "missing" and follows the tree's default branch, exactly as
 * XGBoost treats NaN (its default `missing`); +-inf are compared as ordinary values, as XGBoost's
 * inplace_predict does.
 */
#ifndef FER_HEAD_H
#define FER_HEAD_H

#define FER_HEAD_ABI 1

#if defined(_WIN32)
#  if defined(FER_HEAD_BUILDING)
#    define FER_HEAD_API __declspec(dllexport)
#  else
#    define FER_HEAD_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) || defined(__clang__)
/* The library is built with hidden visibility; only these names are exported. */
#  define FER_HEAD_API __attribute__((visibility("default")))
#else
#  define FER_HEAD_API
#endif

/* Return codes of fer_head_predict; fer_head_strerror(code) says which argument was wrong. */
#define FER_HEAD_OK 0
#define FER_HEAD_E_NULL (-1)     /* rows or out is NULL while n > 0 */
#define FER_HEAD_E_BATCH (-2)    /* n is negative */
#define FER_HEAD_E_FEATURES (-3) /* num_features differs from fer_head_num_features() */
#define FER_HEAD_E_NOMEM (-4)    /* the per-call row buffer could not be allocated */

#ifdef __cplusplus
extern "C" {
#endif

FER_HEAD_API int fer_head_abi_version(void);
FER_HEAD_API int fer_head_num_features(void);
FER_HEAD_API int fer_head_num_classes(void);
/* rows: n x num_features float32, row-major; out: n x num_classes probabilities. 0 on success,
   a negative code on bad arguments (fer_head_strerror(code) says which). */
FER_HEAD_API int fer_head_predict(const float *rows, int n, int num_features, float *out);
FER_HEAD_API const char *fer_head_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* FER_HEAD_H */
