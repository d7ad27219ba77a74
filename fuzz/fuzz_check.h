/* fuzz_check.h: the one assertion the fuzz targets share. A broken property aborts with the
 * target's file, the condition and a message, so libFuzzer saves the input as a crash. */
#ifndef FUZZ_CHECK_H
#define FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond, ...)                                  \
  do {                                                    \
    if (!(cond)) {                                        \
      fprintf(stderr, "%s: %s: ", __FILE__, #cond);       \
      fprintf(stderr, __VA_ARGS__);                       \
      fputc('\n', stderr);                                \
      abort();                                            \
    }                                                     \
  } while (0)

#endif
