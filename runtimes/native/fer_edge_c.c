/* fer_edge C API (fer_edge_c.h): a compiled head opened from a library path or linked in, and,
 * when built with ONNX Runtime's C library (FER_EDGE_WITH_ONNXRUNTIME), the backbone. */
#include "fer_edge_c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fer_head.h"

#if defined(_WIN32)
#include <windows.h>
#else
#include <dlfcn.h>
#endif

typedef int (*int_fn)(void);
typedef int (*predict_fn)(const float *, int, int, float *);

struct fer_edge_head {
  void *handle; /* dlopen handle; NULL for the linked head */
  int num_features;
  int num_classes;
  predict_fn predict;
};

static void set_error(char *errbuf, size_t errlen, const char *what, const char *detail) {
  if (errbuf == NULL || errlen == 0) return;
  snprintf(errbuf, errlen, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
}

static void *load_library(const char *path, char *errbuf, size_t errlen) {
#if defined(_WIN32)
  void *h = (void *)LoadLibraryA(path);
  if (h == NULL) set_error(errbuf, errlen, path, "LoadLibrary failed");
#else
  /* RTLD_LOCAL: two heads opened at once must not resolve each other's generated symbols. */
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) set_error(errbuf, errlen, "dlopen failed", dlerror());
#endif
  return h;
}

static void *find_symbol(void *h, const char *name) {
#if defined(_WIN32)
  return (void *)GetProcAddress((HMODULE)h, name);
#else
  return dlsym(h, name);
#endif
}

static void close_library(void *h) {
  if (h == NULL) return;
#if defined(_WIN32)
  FreeLibrary((HMODULE)h);
#else
  dlclose(h);
#endif
}

int fer_edge_head_open(const char *library_path, fer_edge_head **head, char *errbuf, size_t errlen) {
  fer_edge_head *h;
  int_fn abi, nf, nc;
  void *lib = NULL;

  if (head == NULL) return FER_EDGE_E_ARG;
  *head = NULL;
  if (library_path == NULL) {
#if defined(FER_EDGE_LINKED_HEAD)
    abi = fer_head_abi_version;
    nf = fer_head_num_features;
    nc = fer_head_num_classes;
#else
    set_error(errbuf, errlen, "no head is linked into this build (configure with -DFER_HEAD_SRC=...)", NULL);
    return FER_EDGE_E_NO_LINKED;
#endif
  } else {
    lib = load_library(library_path, errbuf, errlen);
    if (lib == NULL) return FER_EDGE_E_OPEN;
    /* Object-to-function pointer casts through memcpy: ISO C forbids the direct cast. */
    {
      void *sym[4];
      sym[0] = find_symbol(lib, "fer_head_abi_version");
      sym[1] = find_symbol(lib, "fer_head_num_features");
      sym[2] = find_symbol(lib, "fer_head_num_classes");
      sym[3] = find_symbol(lib, "fer_head_predict");
      if (!sym[0] || !sym[1] || !sym[2] || !sym[3]) {
        set_error(errbuf, errlen, library_path, "does not export the fer_head C ABI");
        close_library(lib);
        return FER_EDGE_E_SYMBOL;
      }
      memcpy(&abi, &sym[0], sizeof abi);
      memcpy(&nf, &sym[1], sizeof nf);
      memcpy(&nc, &sym[2], sizeof nc);
    }
  }
  if (abi() != FER_HEAD_ABI) {
    set_error(errbuf, errlen, library_path ? library_path : "linked head", "fer_head ABI version differs");
    close_library(lib);
    return FER_EDGE_E_ABI;
  }
  h = (fer_edge_head *)malloc(sizeof *h);
  if (h == NULL) {
    close_library(lib);
    return FER_EDGE_E_NOMEM;
  }
  h->handle = lib;
  h->num_features = nf();
  h->num_classes = nc();
  if (lib != NULL) {
    void *p = find_symbol(lib, "fer_head_predict");
    memcpy(&h->predict, &p, sizeof h->predict);
  } else {
#if defined(FER_EDGE_LINKED_HEAD)
    h->predict = fer_head_predict;
#endif
  }
  *head = h;
  return FER_EDGE_OK;
}

int fer_edge_head_num_features(const fer_edge_head *head) { return head ? head->num_features : FER_EDGE_E_ARG; }

int fer_edge_head_num_classes(const fer_edge_head *head) { return head ? head->num_classes : FER_EDGE_E_ARG; }

int fer_edge_head_predict(const fer_edge_head *head, const float *embeddings, int n, int num_features, float *probs,
                          int *labels) {
  int rc, i, k;
  if (head == NULL) return FER_EDGE_E_ARG;
  rc = head->predict(embeddings, n, num_features, probs);
  if (rc != 0 || labels == NULL) return rc;
  for (i = 0; i < n; ++i) {
    const float *p = probs + (size_t)i * (size_t)head->num_classes;
    int best = 0;
    for (k = 1; k < head->num_classes; ++k) {
      if (p[k] > p[best]) best = k; /* first of equal maxima, like numpy.argmax */
    }
    labels[i] = best;
  }
  return FER_EDGE_OK;
}

void fer_edge_head_close(fer_edge_head *head) {
  if (head == NULL) return;
  close_library(head->handle);
  free(head);
}

const char *fer_edge_strerror(int code) {
  switch (code) {
    case FER_EDGE_OK: return "success";
    case FER_HEAD_E_NULL: return "embeddings or probs is NULL while n > 0";
    case FER_HEAD_E_BATCH: return "n (the number of rows) is negative";
    case FER_HEAD_E_FEATURES: return "num_features differs from the head's feature count";
    case FER_HEAD_E_NOMEM: return "out of memory in the head";
    case FER_EDGE_E_ARG: return "a NULL handle or pointer, or a size that must be positive";
    case FER_EDGE_E_OPEN: return "the library or model file could not be opened";
    case FER_EDGE_E_SYMBOL: return "the library does not export the fer_head C ABI";
    case FER_EDGE_E_ABI: return "the library speaks another fer_head ABI version; rebuild it from the bundle's sources";
    case FER_EDGE_E_SHAPE: return "a size differs from the model's (features, classes or input shape)";
    case FER_EDGE_E_NOMEM: return "out of memory";
    case FER_EDGE_E_NO_LINKED: return "no head is linked into this build; pass a library path";
    case FER_EDGE_E_NO_BACKBONE: return "this build has no ONNX Runtime; backbones cannot run";
    case FER_EDGE_E_RUNTIME: return "ONNX Runtime reported an error";
    default: return "unknown fer_edge error code";
  }
}

#if defined(FER_EDGE_WITH_ONNXRUNTIME)
/* Not exercised by the test suite where ONNX Runtime's C headers are absent (the pip wheel ships
   the library without them); see docs/benchmarks.md and the repository's CMakeLists.txt. */
#include <onnxruntime_c_api.h>

struct fer_edge_backbone {
  const OrtApi *api;
  OrtEnv *env;
  OrtSession *session;
  OrtMemoryInfo *memory;
  char *input_name;
  char *embedding_name;
};

static char *copy_string(const char *s) {
  size_t n = strlen(s) + 1;
  char *c = (char *)malloc(n);
  if (c != NULL) memcpy(c, s, n);
  return c;
}

/* 0 if status is NULL (success), else the message into errbuf and FER_EDGE_E_RUNTIME. */
static int ort_status(const OrtApi *api, OrtStatus *status, char *errbuf, size_t errlen) {
  if (status == NULL) return FER_EDGE_OK;
  set_error(errbuf, errlen, "onnxruntime", api->GetErrorMessage(status));
  api->ReleaseStatus(status);
  return FER_EDGE_E_RUNTIME;
}

int fer_edge_has_backbone(void) { return 1; }

void fer_edge_backbone_close(fer_edge_backbone *b) {
  if (b == NULL) return;
  if (b->memory) b->api->ReleaseMemoryInfo(b->memory);
  if (b->session) b->api->ReleaseSession(b->session);
  if (b->env) b->api->ReleaseEnv(b->env);
  free(b->input_name);
  free(b->embedding_name);
  free(b);
}

int fer_edge_backbone_open(const char *onnx_path, const char *input_name, const char *embedding_name, int threads,
                           fer_edge_backbone **backbone, char *errbuf, size_t errlen) {
  const OrtApi *api;
  OrtSessionOptions *opts = NULL;
  fer_edge_backbone *b;
  int rc;

  if (backbone == NULL || onnx_path == NULL || input_name == NULL || embedding_name == NULL) return FER_EDGE_E_ARG;
  *backbone = NULL;
  api = OrtGetApiBase()->GetApi(ORT_API_VERSION);
  if (api == NULL) {
    set_error(errbuf, errlen, "the ONNX Runtime library is older than the headers fer_edge was built with", NULL);
    return FER_EDGE_E_RUNTIME;
  }
  b = (fer_edge_backbone *)calloc(1, sizeof *b);
  if (b == NULL) return FER_EDGE_E_NOMEM;
  b->api = api;
  b->input_name = copy_string(input_name);
  b->embedding_name = copy_string(embedding_name);
  if (b->input_name == NULL || b->embedding_name == NULL) {
    fer_edge_backbone_close(b);
    return FER_EDGE_E_NOMEM;
  }
  rc = ort_status(api, api->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "fer_edge", &b->env), errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->CreateSessionOptions(&opts), errbuf, errlen);
  if (rc == 0 && threads > 0) rc = ort_status(api, api->SetIntraOpNumThreads(opts, threads), errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->SetInterOpNumThreads(opts, 1), errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->SetSessionExecutionMode(opts, ORT_SEQUENTIAL), errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->CreateSession(b->env, onnx_path, opts, &b->session), errbuf, errlen);
  if (rc == 0)
    rc = ort_status(api, api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &b->memory), errbuf, errlen);
  if (opts != NULL) api->ReleaseSessionOptions(opts);
  if (rc != 0) {
    fer_edge_backbone_close(b);
    return rc;
  }
  *backbone = b;
  return FER_EDGE_OK;
}

int fer_edge_backbone_embed(fer_edge_backbone *b, const float *input, int n, int channels, int height, int width,
                            float *embedding, int feature_dim, char *errbuf, size_t errlen) {
  const OrtApi *api;
  int64_t shape[4], dims[2];
  size_t ndim = 0;
  OrtValue *in = NULL, *out = NULL;
  OrtTensorTypeAndShapeInfo *info = NULL;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  const char *in_names[1], *out_names[1];
  float *data = NULL;
  int rc;

  if (b == NULL || input == NULL || embedding == NULL || n <= 0 || channels <= 0 || height <= 0 || width <= 0 ||
      feature_dim <= 0)
    return FER_EDGE_E_ARG;
  api = b->api;
  shape[0] = n;
  shape[1] = channels;
  shape[2] = height;
  shape[3] = width;
  in_names[0] = b->input_name;
  out_names[0] = b->embedding_name;
  rc = ort_status(api,
                  api->CreateTensorWithDataAsOrtValue(b->memory, (void *)input,
                                                      sizeof(float) * (size_t)n * channels * height * width, shape, 4,
                                                      ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, &in),
                  errbuf, errlen);
  if (rc == 0)
    rc = ort_status(api, api->Run(b->session, NULL, in_names, (const OrtValue *const *)&in, 1, out_names, 1, &out),
                    errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->GetTensorTypeAndShape(out, &info), errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->GetTensorElementType(info, &type), errbuf, errlen);
  if (rc == 0) rc = ort_status(api, api->GetDimensionsCount(info, &ndim), errbuf, errlen);
  if (rc == 0 && (ndim != 2 || type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)) {
    set_error(errbuf, errlen, "the embedding output is not a 2-D float32 tensor", NULL);
    rc = FER_EDGE_E_SHAPE;
  }
  if (rc == 0) rc = ort_status(api, api->GetDimensions(info, dims, 2), errbuf, errlen);
  if (rc == 0 && (dims[0] != n || dims[1] != feature_dim)) {
    set_error(errbuf, errlen, "the embedding output's shape differs from n x feature_dim", NULL);
    rc = FER_EDGE_E_SHAPE;
  }
  if (rc == 0) rc = ort_status(api, api->GetTensorMutableData(out, (void **)&data), errbuf, errlen);
  if (rc == 0) memcpy(embedding, data, sizeof(float) * (size_t)n * (size_t)feature_dim);
  if (info != NULL) api->ReleaseTensorTypeAndShapeInfo(info);
  if (out != NULL) api->ReleaseValue(out);
  if (in != NULL) api->ReleaseValue(in);
  return rc;
}

#else /* no ONNX Runtime: the backbone calls say so */

int fer_edge_has_backbone(void) { return 0; }

int fer_edge_backbone_open(const char *onnx_path, const char *input_name, const char *embedding_name, int threads,
                           fer_edge_backbone **backbone, char *errbuf, size_t errlen) {
  (void)onnx_path, (void)input_name, (void)embedding_name, (void)threads;
  if (backbone != NULL) *backbone = NULL;
  set_error(errbuf, errlen, fer_edge_strerror(FER_EDGE_E_NO_BACKBONE), NULL);
  return FER_EDGE_E_NO_BACKBONE;
}

int fer_edge_backbone_embed(fer_edge_backbone *backbone, const float *input, int n, int channels, int height,
                            int width, float *embedding, int feature_dim, char *errbuf, size_t errlen) {
  (void)backbone, (void)input, (void)n, (void)channels, (void)height, (void)width, (void)embedding,
      (void)feature_dim;
  set_error(errbuf, errlen, fer_edge_strerror(FER_EDGE_E_NO_BACKBONE), NULL);
  return FER_EDGE_E_NO_BACKBONE;
}

void fer_edge_backbone_close(fer_edge_backbone *backbone) { (void)backbone; }

#endif
