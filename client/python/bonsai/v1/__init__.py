"""Generated gRPC/protobuf stubs for bonsai.v1 (see proto/). Do not edit."""
