#include "server/observability/process_collector.h"

#include <sys/resource.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"

namespace bonsai::observability {
namespace {

struct ProcStat {
  bool ok = false;
  double cpu_seconds = 0;
  double start_ticks = 0;
  double virtual_bytes = 0;
  double resident_pages = 0;
};

// /proc/self/stat: the command name (field 2) may hold spaces and parentheses,
// so fields are counted from the last ')'.
ProcStat ReadProcStat() {
  ProcStat out;
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return out;
  const auto close = line.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream fields(line.substr(close + 2));
  std::string f;
  // After ')': field 3 (state) is index 0; utime is field 14, stime 15,
  // starttime 22, vsize 23, rss 24.
  double utime = 0, stime = 0;
  for (int field = 3; fields >> f; ++field) {
    if (field == 14) utime = std::stod(f);
    if (field == 15) stime = std::stod(f);
    if (field == 22) out.start_ticks = std::stod(f);
    if (field == 23) out.virtual_bytes = std::stod(f);
    if (field == 24) {
      out.resident_pages = std::stod(f);
      out.ok = true;
      break;
    }
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  out.cpu_seconds = (utime + stime) / ticks;
  out.start_ticks /= ticks;  // now seconds after boot
  return out;
}

double BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  std::string key;
  double value = 0;
  while (in >> key) {
    if (key == "btime" && in >> value) return value;
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

double OpenFds() {
  std::error_code ec;
  double n = 0;
  for (std::filesystem::directory_iterator it("/proc/self/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    ++n;
  }
  return n;
}

prometheus::MetricFamily Gauge(const char* name, const char* help, double value) {
  prometheus::ClientMetric m;
  m.gauge.value = value;
  return {name, help, prometheus::MetricType::Gauge, {m}};
}

prometheus::MetricFamily Counter(const char* name, const char* help, double value) {
  prometheus::ClientMetric m;
  m.counter.value = value;
  return {name, help, prometheus::MetricType::Counter, {m}};
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  const ProcStat stat = ReadProcStat();
  if (stat.ok) {
    const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    out.push_back(Counter("process_cpu_seconds_total",
                          "Total user and system CPU time spent in seconds.", stat.cpu_seconds));
    out.push_back(Gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                        stat.resident_pages * page));
    out.push_back(Gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                        stat.virtual_bytes));
    out.push_back(Gauge("process_start_time_seconds",
                        "Start time of the process since unix epoch in seconds.",
                        BootTimeSeconds() + stat.start_ticks));
  }
  out.push_back(Gauge("process_open_fds", "Number of open file descriptors.", OpenFds()));
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    out.push_back(Gauge("process_max_fds", "Maximum number of open file descriptors.",
                        static_cast<double>(limit.rlim_cur)));
  }
  return out;
}

}  // namespace bonsai::observability
