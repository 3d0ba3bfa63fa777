/* classify_embedding: label face embeddings with a bundle's compiled head, through the fer_edge C API.
 *
 *   classify_embedding [--library PATH] [--labels angry,disgust,...] [--probs] [FILE | -]
 *
 * Input (FILE or stdin): one embedding per line, num_features numbers separated by spaces or
 * commas; empty lines and lines starting with '#' are skipped. "nan" marks a missing value.
 * Output: one line per embedding: index, label (if --labels), score; with --probs all probabilities.
 * --library: a libfer_head for this machine (a bundle's heads.<name>.libraries entry); without it,
 * the head linked into this build (configured with -DFER_HEAD_SRC=...).
 * Labels are the bundle manifest's `labels`, in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fer_edge_c.h"

#define MAX_LABELS 256

static int split_labels(char *list, char **labels) {
  int n = 0;
  char *tok = strtok(list, ",");
  while (tok != NULL && n < MAX_LABELS) {
    labels[n++] = tok;
    tok = strtok(NULL, ",");
  }
  return n;
}

/* Parses one line into row[0..nf); returns the count of numbers read, or -1 on a bad token. */
static int parse_row(char *line, float *row, int nf) {
  int count = 0;
  char *p = line;
  for (;;) {
    char *end;
    float v;
    while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\r' || *p == '\n') ++p;
    if (*p == '\0') break;
    v = strtof(p, &end);
    if (end == p) return -1;
    if (count < nf) row[count] = v;
    ++count;
    p = end;
  }
  return count;
}

static int usage(const char *argv0) {
  fprintf(stderr, "usage: %s [--library PATH] [--labels a,b,...] [--probs] [FILE | -]\n", argv0);
  return 2;
}

int main(int argc, char **argv) {
  const char *library = NULL, *path = "-";
  char *labels[MAX_LABELS];
  int num_labels = 0, show_probs = 0, i, rc, nf, nc, lineno = 0, status = 0;
  char err[512] = "";
  fer_edge_head *head = NULL;
  FILE *in;
  char *line = NULL;
  size_t cap = 0;
  float *row, *probs;

  for (i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--library") == 0 && i + 1 < argc) {
      library = argv[++i];
    } else if (strcmp(argv[i], "--labels") == 0 && i + 1 < argc) {
      num_labels = split_labels(argv[++i], labels);
    } else if (strcmp(argv[i], "--probs") == 0) {
      show_probs = 1;
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage(argv[0]);
    } else {
      path = argv[i];
    }
  }

  rc = fer_edge_head_open(library, &head, err, sizeof err);
  if (rc != 0) {
    fprintf(stderr, "cannot open the head: %s (%s)\n", fer_edge_strerror(rc), err);
    return 1;
  }
  nf = fer_edge_head_num_features(head);
  nc = fer_edge_head_num_classes(head);
  if (num_labels != 0 && num_labels != nc) {
    fprintf(stderr, "--labels names %d labels but the head predicts %d classes\n", num_labels, nc);
    fer_edge_head_close(head);
    return 2;
  }
  in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
  if (in == NULL) {
    perror(path);
    fer_edge_head_close(head);
    return 1;
  }
  row = (float *)malloc(sizeof(float) * (size_t)nf);
  probs = (float *)malloc(sizeof(float) * (size_t)nc);
  if (row == NULL || probs == NULL) {
    fprintf(stderr, "out of memory\n");
    return 1;
  }
  /* Lines of 512 floats exceed any fixed buffer worth declaring: read with a growing one. */
  for (;;) {
    size_t len = 0;
    int c, count, label;
    while ((c = fgetc(in)) != EOF && c != '\n') {
      if (len + 2 > cap) {
        char *grown = (char *)realloc(line, cap ? cap * 2 : 4096);
        if (grown == NULL) {
          fprintf(stderr, "out of memory\n");
          return 1;
        }
        line = grown;
        cap = cap ? cap * 2 : 4096;
      }
      line[len++] = (char)c;
    }
    if (c == EOF && len == 0) break;
    ++lineno;
    if (line == NULL || len == 0) continue;
    line[len] = '\0';
    if (line[0] == '#') continue;
    count = parse_row(line, row, nf);
    if (count == 0) continue;
    if (count != nf) {
      if (count < 0)
        fprintf(stderr, "line %d: not a list of numbers\n", lineno);
      else
        fprintf(stderr, "line %d: has %d numbers; the head takes %d features\n", lineno, count, nf);
      status = 1;
      break;
    }
    rc = fer_edge_head_predict(head, row, 1, nf, probs, &label);
    if (rc != 0) {
      fprintf(stderr, "line %d: %s\n", lineno, fer_edge_strerror(rc));
      status = 1;
      break;
    }
    printf("%d\t%s\t%.6f", label, num_labels ? labels[label] : "-", probs[label]);
    if (show_probs) {
      for (i = 0; i < nc; ++i) printf("%c%.9g", i ? ',' : '\t', probs[i]);
    }
    printf("\n");
  }
  free(line);
  free(row);
  free(probs);
  if (in != stdin) fclose(in);
  fer_edge_head_close(head);
  return status;
}
