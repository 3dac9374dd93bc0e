#include "server/api/capabilities.h"

#include "server/methods/method_config.h"

namespace bonsai::api {

v1::Capabilities DescribeCapabilities(const ServiceContext& context) {
  v1::Capabilities out;
  out.set_version(BONSAI_VERSION);
  out.add_formats("onnx");
  out.add_formats("safetensors");
  for (const methods::MethodDescription& method : methods::DescribeMethods()) {
    v1::MethodInfo* info = out.add_methods();
    info->set_name(method.name);
    info->set_description(method.description);
    info->set_needs_calibration(method.needs_calibration);
    for (const auto& format : method.formats) info->add_formats(format);
    for (const auto& parameter : method.parameters) {
      v1::ParameterInfo* p = info->add_parameters();
      p->set_name(parameter.name);
      p->set_type(parameter.type);
      p->set_default_value(parameter.default_value);
      p->set_description(parameter.description);
    }
  }
  v1::Limits* limits = out.mutable_limits();
  limits->set_max_model_bytes(context.options.max_model_bytes);
  limits->set_max_chunk_bytes(context.options.max_chunk_bytes);
  limits->set_max_calibration_bytes(context.options.max_calibration_bytes);
  limits->set_workers(context.scheduler->workers());
  limits->set_max_queued_jobs(context.scheduler->max_queued_jobs());
  limits->set_max_files(static_cast<uint32_t>(context.options.max_files));
  if (context.peers != nullptr) {
    limits->set_max_jobs_per_peer(static_cast<uint32_t>(context.peers->max_jobs_per_peer()));
  }
  limits->set_max_job_seconds(context.options.max_job_seconds);
  limits->set_receive_idle_timeout_seconds(context.options.receive_idle_timeout_seconds);
  if (context.memory != nullptr) limits->set_max_memory_bytes(context.memory->limit());
  if (context.spool != nullptr) limits->set_max_spool_bytes(context.spool->limit());
  if (context.memory_spool != nullptr) {
    limits->set_memory_spool_bytes(context.memory_spool->limit());
  }
  return out;
}

}  // namespace bonsai::api
