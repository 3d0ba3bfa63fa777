/* fer_edge C API: facial-expression classification for device apps not written in Python.
 *
 * Head: a bundle's compiled tree head (heads.<name>.libraries[<platform>] in manifest.json, or
 *   one built from its sources with the repository's CMakeLists.txt) turns a backbone embedding
 *   into class probabilities and a label index. Index i is manifest.json's labels[i].
 * Backbone (only when built with ONNX Runtime's C library, FER_EDGE_WITH_ONNXRUNTIME): runs the
 *   bundle's ONNX on crops the app has already preprocessed as manifest.json's `input` says
 *   (size, scale, mean, std; NCHW float32) and returns the embedding output.
 *
 * All functions return 0 or a negative code (fer_edge_strerror(code) says what was wrong).
 * Handles are immutable after open: one may be used from many threads at once.
 */
#ifndef FER_EDGE_C_H
#define FER_EDGE_C_H

#include <stddef.h>

#define FER_EDGE_C_API_VERSION 1

#if defined(_WIN32)
#  if defined(FER_EDGE_BUILDING)
#    define FER_EDGE_API __declspec(dllexport)
#  else
#    define FER_EDGE_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) || defined(__clang__)
#  define FER_EDGE_API __attribute__((visibility("default")))
#else
#  define FER_EDGE_API
#endif

/* -1 .. -4 are fer_head_predict's own codes (fer_head.h), passed through. */
#define FER_EDGE_OK 0
#define FER_EDGE_E_ARG (-10)         /* a NULL pointer or a negative/zero size where one is needed */
#define FER_EDGE_E_OPEN (-11)        /* the library or model file could not be opened (see errbuf) */
#define FER_EDGE_E_SYMBOL (-12)      /* the library does not export the fer_head C ABI */
#define FER_EDGE_E_ABI (-13)         /* the library speaks another fer_head ABI version */
#define FER_EDGE_E_SHAPE (-14)       /* num_features / feature_dim / input shape differs from the model's */
#define FER_EDGE_E_NOMEM (-15)       /* out of memory */
#define FER_EDGE_E_NO_LINKED (-16)   /* open(NULL): this build has no head linked in */
#define FER_EDGE_E_NO_BACKBONE (-17) /* this build has no ONNX Runtime */
#define FER_EDGE_E_RUNTIME (-18)     /* ONNX Runtime reported an error (see errbuf) */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fer_edge_head fer_edge_head;

/* Open a compiled head. library_path: a libfer_head built for this machine; NULL = the head
   linked into this build (configured with FER_HEAD_SRC). errbuf (may be NULL) receives the
   loader's message on FER_EDGE_E_OPEN. Checks the library's ABI version. */
FER_EDGE_API int fer_edge_head_open(const char *library_path, fer_edge_head **head, char *errbuf, size_t errlen);
FER_EDGE_API int fer_edge_head_num_features(const fer_edge_head *head);
FER_EDGE_API int fer_edge_head_num_classes(const fer_edge_head *head);
/* embeddings: n x num_features float32 row-major (NaN = missing, as in XGBoost);
   probs: n x num_classes out; labels: n label indices out (argmax of probs), may be NULL. */
FER_EDGE_API int fer_edge_head_predict(const fer_edge_head *head, const float *embeddings, int n, int num_features,
                                       float *probs, int *labels);
FER_EDGE_API void fer_edge_head_close(fer_edge_head *head);

typedef struct fer_edge_backbone fer_edge_backbone;

/* 1 when this build can run backbones (ONNX Runtime was found at build time), else 0. */
FER_EDGE_API int fer_edge_has_backbone(void);
/* Open a bundle's backbone ONNX (e.g. backbone/onnx/model.fp32.onnx). input_name / embedding_name:
   manifest.json input.input_name and model.outputs.embedding. threads <= 0: ONNX Runtime's default. */
FER_EDGE_API int fer_edge_backbone_open(const char *onnx_path, const char *input_name, const char *embedding_name,
                                        int threads, fer_edge_backbone **backbone, char *errbuf, size_t errlen);
/* input: n x channels x height x width float32, preprocessed; embedding: n x feature_dim out. */
FER_EDGE_API int fer_edge_backbone_embed(fer_edge_backbone *backbone, const float *input, int n, int channels,
                                         int height, int width, float *embedding, int feature_dim, char *errbuf,
                                         size_t errlen);
FER_EDGE_API void fer_edge_backbone_close(fer_edge_backbone *backbone);

FER_EDGE_API const char *fer_edge_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* FER_EDGE_C_H */
