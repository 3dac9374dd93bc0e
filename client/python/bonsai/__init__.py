"""Python client for bonsai, the gRPC model-compression service.

    import bonsai
    with bonsai.Client("localhost:50051") as client:
        result = client.compress("model.onnx", method="magnitude", sparsity=0.5,
                                 output_path="model.pruned.onnx")
        print(result.report.totals.sparsity)
"""
from bonsai.allocator import tune_for_streaming
from bonsai.client import Client, channel_options
from bonsai.errors import (BonsaiError, IntegrityError, InvalidArgument, InvalidModel, InvalidSpec, ModelTooLarge,
                           ServerBusy, ServerUnavailable)
from bonsai.recipes import RecipeError
from bonsai.results import CompressResult, to_dict
from bonsai.retry import NO_RETRY, RetryPolicy

__version__ = "0.1.0"
__all__ = ["Client", "CompressResult", "BonsaiError", "IntegrityError", "InvalidArgument", "InvalidSpec",
           "InvalidModel", "ModelTooLarge", "ServerBusy", "ServerUnavailable", "RecipeError", "RetryPolicy", "NO_RETRY",
           "to_dict", "channel_options", "tune_for_streaming", "__version__"]
