// What every engine benchmark binary needs: failing loudly, and CPU time.
#ifndef BONSAI_BENCH_BENCH_UTIL_H_
#define BONSAI_BENCH_BENCH_UTIL_H_

#include <errno.h>  // program_invocation_short_name (glibc)
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace bonsai::bench {

// Prints "<program>: <message>" and exits 1: run_all.py shows stderr.
[[noreturn]] inline void Fail(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, message.c_str());
  std::exit(1);
}

// CPU time of the process: on a shared machine, wall time also counts the
// time other processes held the cores; this does not.
inline double CpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

}  // namespace bonsai::bench

#endif  // BONSAI_BENCH_BENCH_UTIL_H_
