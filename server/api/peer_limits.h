// The per-peer cap on admitted jobs (--max_jobs_per_peer), so that one
// client, however many streams it opens, cannot take every job slot and
// lock the others out. A peer is the client's address without its port
// (gRPC's peer string "ipv4:10.0.0.7:53122" -> "ipv4:10.0.0.7"): each
// connection, and each stream on it, of one host counts against one cap.
// Behind an L7 proxy every client shares the proxy's address; there the cap
// is on the proxy and should be raised or turned off (0).
#ifndef BONSAI_SERVER_API_PEER_LIMITS_H_
#define BONSAI_SERVER_API_PEER_LIMITS_H_

#include <memory>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace bonsai::api {

// "ipv4:1.2.3.4:5" -> "ipv4:1.2.3.4", "ipv6:[::1]:5" -> "ipv6:[::1]"; a peer
// string without a port (a Unix socket) is returned whole.
std::string PeerAddress(std::string_view grpc_peer);

class PeerLimits;

// One admitted job of one peer; the destructor gives the peer's place back.
class PeerSlot {
 public:
  PeerSlot(PeerLimits* limits, std::string address)
      : limits_(limits), address_(std::move(address)) {}
  ~PeerSlot();
  PeerSlot(const PeerSlot&) = delete;
  PeerSlot& operator=(const PeerSlot&) = delete;

 private:
  PeerLimits* limits_;
  std::string address_;
};

class PeerLimits {
 public:
  // 0: no cap.
  explicit PeerLimits(int max_jobs_per_peer) : max_per_peer_(max_jobs_per_peer) {}

  // RESOURCE_EXHAUSTED naming --max_jobs_per_peer when `address` already
  // has that many admitted jobs.
  absl::StatusOr<std::unique_ptr<PeerSlot>> Admit(const std::string& address);

  int max_jobs_per_peer() const { return max_per_peer_; }
  int admitted(const std::string& address) const;

 private:
  friend class PeerSlot;
  void Release(const std::string& address);

  const int max_per_peer_;
  mutable absl::Mutex mu_;
  // Only peers with a job: an entry goes when its count returns to 0, so
  // the map is bounded by the job slots, not by every client ever seen.
  absl::flat_hash_map<std::string, int> admitted_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_PEER_LIMITS_H_
