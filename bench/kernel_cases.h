/* The table of kernel benchmark cases (bench/kernel_cases.c). */
#ifndef FILO_BENCH_KERNEL_CASES_H
#define FILO_BENCH_KERNEL_CASES_H

#include "harness.h"

/* One row of the benchmark: a case, the dtype it runs in and its dims at each shape preset. */
typedef struct bench_entry {
    const bench_case *c;
    filo_dtype dtype;
    int64_t base[4];
    int64_t mini[4];
    int64_t quick[4];
} bench_entry;

extern const bench_entry bench_entries[];
extern const int bench_entry_count;

#endif
