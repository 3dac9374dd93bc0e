#include "server/api/peer_limits.h"

#include "absl/strings/str_cat.h"

namespace bonsai::api {

std::string PeerAddress(std::string_view grpc_peer) {
  // Only the ip schemes carry a port, always after the last ':' (an IPv6
  // address is bracketed, so its own colons come before "]:").
  if (!grpc_peer.starts_with("ipv4:") && !grpc_peer.starts_with("ipv6:")) {
    return std::string(grpc_peer);
  }
  const size_t colon = grpc_peer.rfind(':');
  if (colon <= 4) return std::string(grpc_peer);  // the scheme's own colon: no port
  return std::string(grpc_peer.substr(0, colon));
}

PeerSlot::~PeerSlot() { limits_->Release(address_); }

absl::StatusOr<std::unique_ptr<PeerSlot>> PeerLimits::Admit(const std::string& address) {
  absl::MutexLock lock(&mu_);
  int& count = admitted_[address];
  if (max_per_peer_ > 0 && count >= max_per_peer_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this client (", address, ") already has ", count,
        " jobs admitted, this server's limit per client (--max_jobs_per_peer), so that one "
        "client cannot take every job slot; wait for one of them to end, or spread the jobs "
        "over replicas"));
  }
  ++count;
  return std::make_unique<PeerSlot>(this, address);
}

int PeerLimits::admitted(const std::string& address) const {
  absl::MutexLock lock(&mu_);
  auto it = admitted_.find(address);
  return it == admitted_.end() ? 0 : it->second;
}

void PeerLimits::Release(const std::string& address) {
  absl::MutexLock lock(&mu_);
  auto it = admitted_.find(address);
  if (it == admitted_.end()) return;
  if (--it->second <= 0) admitted_.erase(it);
}

}  // namespace bonsai::api
