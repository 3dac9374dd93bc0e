"""`python3 -m bonsai`: compress, inspect and query a bonsai server.

Results go to stdout, progress bars and errors to stderr. Exit status: 0 on
success, 2 when the request was invalid (INVALID_ARGUMENT or a bad command
line), 1 for every other failure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import grpc
from google.protobuf import json_format

from bonsai import __version__, recipes
from bonsai.allocator import tune_for_streaming
from bonsai.client import Client
from bonsai.errors import BonsaiError
from bonsai.progress_bars import CompressBars
from bonsai.report_table import format_capabilities, format_inspect, format_report

DEFAULT_TARGET = "localhost:50051"


METHODS = ("magnitude", "nm", "structured", "wanda", "sparsegpt", "binarize", "ternarize", "rtn", "gptq")
EPILOG = ("methods: " + ", ".join(METHODS) + " (`capabilities` lists the server's, with their "
          "parameters). Connection options may come before or after the command.")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" where there is a default worth showing; options
    whose default is "unset" say what that means in their own help."""

    def _get_help_string(self, action):
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _connection_options(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Server and TLS options: on the main parser with their defaults, and on
    each command with none, so that `--target` works after the command too
    without the command's default undoing a value given before it."""
    def value(v):
        return v if defaults else argparse.SUPPRESS
    p.add_argument("--target", default=value(os.environ.get("BONSAI_TARGET", DEFAULT_TARGET)),
                   help="server address, e.g. localhost:50051 or dns:///bonsai-headless.ns.svc:50051 "
                        f"(default: $BONSAI_TARGET or {DEFAULT_TARGET})")
    p.add_argument("--timeout", type=float, default=value(3600.0), metavar="SECONDS",
                   help="deadline of each call, in seconds (default: 3600)")
    t = p.add_argument_group("TLS", "TLS is on when any of these is given (each defaults to its "
                                    "$BONSAI_TLS_... variable)")
    t.add_argument("--tls", action="store_true", default=value(_env_flag("BONSAI_TLS")),
                   help="use TLS, trusting the system's CAs unless --tls-ca says otherwise "
                        "(default: off, or $BONSAI_TLS=1)")
    t.add_argument("--tls-ca", metavar="PEM", default=value(os.environ.get("BONSAI_TLS_CA") or None),
                   help="CA certificate(s) that signed the server's certificate (default: $BONSAI_TLS_CA)")
    t.add_argument("--tls-cert", metavar="PEM", default=value(os.environ.get("BONSAI_TLS_CERT") or None),
                   help="client certificate, for a server that requires one (mutual TLS) "
                        "(default: $BONSAI_TLS_CERT)")
    t.add_argument("--tls-key", metavar="PEM", default=value(os.environ.get("BONSAI_TLS_KEY") or None),
                   help="private key of --tls-cert (default: $BONSAI_TLS_KEY)")
    t.add_argument("--tls-server-name", metavar="NAME",
                   default=value(os.environ.get("BONSAI_TLS_SERVER_NAME") or None),
                   help="name to expect in the server's certificate when the target differs, e.g. "
                        "through a port-forward (default: $BONSAI_TLS_SERVER_NAME, else the target's host)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m bonsai", description=__doc__.splitlines()[0],
                                epilog=EPILOG, formatter_class=_Formatter)
    p.add_argument("--version", action="version", version=f"bonsai client {__version__}")
    _connection_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=_Formatter)
        _connection_options(c, defaults=False)
        return c

    c = command("compress", "compress a model (ONNX, safetensors, or a Hugging Face folder)")
    c.add_argument("input", help="a model file, or a folder of safetensors shards; an .onnx file's "
                                 "external data files beside it go with it")
    c.add_argument("-o", "--output-file", "--output-path", required=True, dest="output_file",
                   help="where to write the model: a file for a file (data files beside it), a folder for a "
                        "folder; missing folders are made; no default: required")
    c.add_argument("--method", metavar="METHOD",
                   help="compression method for every selected tensor (default: magnitude; with "
                        "--rules or --recipe the rules name the methods)")
    c.add_argument("--sparsity", type=float,
                   help="fraction of weights (structured: channels) to zero, in [0, 1) (default: 0.5; "
                        "not used with --rules or --recipe)")
    c.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="layer: each tensor to the target; global: one threshold over all selected")
    c.add_argument("--include", action="append", default=[], metavar="RE",
                   help="also select tensors whose name matches (RE2, searched; repeatable; "
                        "default: none); names structured pruning's output heads to prune them too")
    c.add_argument("--exclude", action="append", default=[], metavar="RE",
                   help="leave tensors whose name matches alone (repeatable; default: none)")
    c.add_argument("--include-only", action="store_true",
                   help="select only tensors matching --include (default: off: bonsai's default selection too)")
    c.add_argument("--override", action="append", default=[], metavar="NAME=SPARSITY",
                   help="another sparsity for one tensor (repeatable; default: none)")
    o = c.add_argument_group("method options", "each is sent only when given; unset means the "
                                               "method's default, and a method refuses options it does not read")
    o.add_argument("--n", type=int, help="N:M: keep n of every m (nm; wanda, sparsegpt) (default: unset)")
    o.add_argument("--m", type=int, help="N:M group size, at most 32 (default: unset)")
    o.add_argument("--norm", choices=("l1", "l2"), help="structured: channel norm (default: l2)")
    o.add_argument("--mode", choices=("mask", "physical"), dest="structured_mode",
                   help="structured: zero channels in place, or remove them from the ONNX graph (default: mask)")
    o.add_argument("--block-size", type=int, help="sparsegpt, gptq: columns per block (default: 128)")
    o.add_argument("--dampening", type=float,
                   help="sparsegpt, gptq: Hessian dampening, fraction of its mean diagonal (default: 0.01)")
    o.add_argument("--per-channel", action="store_true", default=None,
                   help="ternarize: one scale per output channel (default: one per tensor)")
    o.add_argument("--bits", type=int,
                   help="rtn, gptq: 2, 3, 4 or 8 (default: 4); sparsegpt: also quantize (default: no)")
    o.add_argument("--group-size", type=int,
                   help="rtn, gptq, sparsegpt: weights per quantization grid (default: 128; 0: per channel)")
    o.add_argument("--symmetric", action="store_true", default=None,
                   help="rtn, gptq, sparsegpt: symmetric grids (default: asymmetric)")
    o.add_argument("--act-order", action="store_true", default=None,
                   help="gptq: columns by decreasing Hessian diagonal (default: natural order)")
    r = c.add_argument_group("recipes")
    r.add_argument("--rules", metavar="FILE",
                   help="bonsai rules, JSON or YAML: a list of {tensor_regex, method, sparsity, options, "
                        "name} or {\"rules\": [...]} (default: none)")
    r.add_argument("--recipe", metavar="FILE",
                   help="an llm-compressor recipe YAML (SparseGPTModifier, WandaPruningModifier, "
                        "MagnitudePruningModifier, QuantizationModifier, GPTQModifier) (default: none)")
    c.add_argument("--output", choices=("dense", "packed"), default="dense", help="storage of the output")
    c.add_argument("--quantized-layout", choices=("compressed-tensors", "gptq"), default=None,
                   help="packed safetensors layout of quantized weights (default: compressed-tensors)")
    c.add_argument("--calibration", metavar="FILE",
                   help="safetensors of Gram matrices (bonsai.calibration) (default: none)")
    c.add_argument("--report-json", metavar="FILE", help="also write the report as protobuf JSON (default: no)")
    bars = c.add_mutually_exclusive_group()
    bars.add_argument("--progress", action="store_true",
                      help="progress bars on stderr even when it is not a terminal (default: only on a terminal)")
    bars.add_argument("--quiet", action="store_true", help="no progress bars (default: bars on a terminal)")
    c.add_argument("--report-html", metavar="FILE",
                   help="also write the report as a self-contained HTML page with per-layer charts (default: no)")
    c.add_argument("--parallel", action="store_true", default=None,
                   help="spread a folder's shards over every replica of --target (a comma-separated "
                        "list or a dns:/// name), one job per shard, same output as one job (default: "
                        "on when the target resolves to several replicas and the folder has several shards)")
    c.add_argument("--no-parallel", dest="parallel", action="store_false", help="one job on one replica")

    i = command("inspect", "list a model's tensors and what bonsai would prune")
    i.add_argument("input", help="a model file or a folder of safetensors shards")
    i.add_argument("--include", action="append", default=[], metavar="RE",
                   help="also select tensors whose name matches (repeatable; default: none)")
    i.add_argument("--exclude", action="append", default=[], metavar="RE",
                   help="leave tensors whose name matches alone (repeatable; default: none)")
    i.add_argument("--json", action="store_true", help="print protobuf JSON (default: a table)")

    w = command("sweep", "each layer's error at several sparsities, and per-layer targets")
    w.add_argument("input", help="a model file or a folder of safetensors shards")
    w.add_argument("--method", default="magnitude", help="method to sweep (default: magnitude)")
    w.add_argument("--sparsities", default="0.3,0.5,0.7,0.9",
                   help="comma-separated sparsities, one job each (default: 0.3,0.5,0.7,0.9)")
    w.add_argument("--target-sparsity", type=float, metavar="SPARSITY",
                   help="suggest per-layer sparsities reaching this share of the weights (default: none)")
    w.add_argument("--calibration", metavar="FILE", help="calibration file for wanda, sparsegpt (default: none)")
    w.add_argument("--include", action="append", default=[], metavar="RE",
                   help="also select tensors whose name matches (repeatable; default: none)")
    w.add_argument("--exclude", action="append", default=[], metavar="RE",
                   help="leave tensors whose name matches alone (repeatable; default: none)")
    w.add_argument("--html", metavar="FILE", help="also write the table and its chart as an HTML page (default: no)")
    w.add_argument("--rules-out", metavar="FILE",
                   help="with --target-sparsity: write the suggestion as a rules file for `compress --rules` "
                        "(default: no)")

    k = command("capabilities", "formats, methods and limits of the server")
    k.add_argument("--json", action="store_true", help="print protobuf JSON (default: a table)")
    return p


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _client(args) -> Client:
    files = (args.tls_ca, args.tls_cert, args.tls_key)
    credentials = None
    if args.tls and all(f is None for f in files):
        credentials = grpc.ssl_channel_credentials()  # the system's CAs
    target = args.target.split(",") if "," in args.target else args.target
    return Client(target, timeout=args.timeout, credentials=credentials, tls_ca=args.tls_ca,
                  tls_cert=args.tls_cert, tls_key=args.tls_key, tls_server_name=args.tls_server_name)


def _overrides(items: Sequence[str]) -> dict:
    result = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise ValueError(f"--override expects NAME=SPARSITY, got {item!r}")
        result[name] = float(value)
    return result


def _show_bars(args, stream=sys.stderr) -> bool:
    if args.quiet:
        return False
    return args.progress or (hasattr(stream, "isatty") and stream.isatty())


def _compress(client: Client, args) -> None:
    options = {k: getattr(args, k) for k in ("n", "m", "norm", "structured_mode", "block_size",
                                             "dampening", "per_channel", "bits", "group_size",
                                             "symmetric", "act_order")}
    if args.rules and args.recipe:
        raise ValueError("give --rules or --recipe, not both")
    rules = recipes.load_rules(args.rules) if args.rules else []
    if args.recipe:
        rules = recipes.from_llmcompressor(args.recipe)
    if rules and (args.method is not None or args.sparsity is not None):
        raise ValueError("--method and --sparsity apply to every tensor; with --rules or --recipe "
                         "each rule gives its own (leave them out)")
    bars = CompressBars(enabled=_show_bars(args))
    try:
        result = client.compress(
            args.input, method=args.method, sparsity=args.sparsity, scope=args.scope,
            include=args.include, exclude=args.exclude, include_only=args.include_only,
            overrides=_overrides(args.override), options=options, rules=rules, output=args.output,
            quantized_layout=args.quantized_layout,
            calibration=args.calibration, output_path=args.output_file,
            progress=bars.progress, upload_progress=bars.upload, download_progress=bars.download,
            parallel=args.parallel, shard_progress=bars.shards)
    finally:
        bars.close()
    if args.report_json:
        with open(args.report_json, "w") as f:
            f.write(json_format.MessageToJson(result.report, preserving_proto_field_name=True))
            f.write("\n")
    if args.report_html:
        result.save_html(args.report_html, title=f"bonsai: {os.path.basename(os.path.normpath(args.input))}")
    print(format_report(result.report, packed=args.output == "packed"))
    for job in getattr(result, "shard_jobs", ()):
        t = job.report.timings
        print(f"job {job.index}: {', '.join(job.files)} on {job.replica}: {job.seconds:.2f} s "
              f"(receive {t.receive_seconds:.2f}, compress {t.compress_seconds:.2f}, "
              f"send {t.send_seconds:.2f}){f'; {len(job.attempts)} failed tries' if job.attempts else ''}")


def _sweep(client: Client, args) -> None:
    sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    done = lambda k, n: print(f"sweep: {k}/{n} jobs", file=sys.stderr)  # noqa: E731
    result = client.sweep(args.input, sparsities, method=args.method, calibration=args.calibration,
                          include=args.include, exclude=args.exclude, progress=done)
    suggestion = result.suggest(args.target_sparsity) if args.target_sparsity is not None else None
    print(result.table(suggestion))
    if suggestion is not None:
        print(f"suggested sparsities prune {100 * result.weighted_sparsity(suggestion):.1f}% of the swept weights")
        if args.rules_out:
            with open(args.rules_out, "w") as f:
                json.dump(result.rules(suggestion), f, indent=1)
    if args.html:
        result.save_html(args.html, suggestion)


def _print_message(message, as_json: bool, formatter) -> None:
    if as_json:
        print(json_format.MessageToJson(message, preserving_proto_field_name=True))
    else:
        print(formatter(message))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with _client(args) as client:
            if args.command == "compress":
                _compress(client, args)
            elif args.command == "sweep":
                _sweep(client, args)
            elif args.command == "inspect":
                _print_message(client.inspect(args.input, include=args.include, exclude=args.exclude),
                               args.json, format_inspect)
            else:
                _print_message(client.capabilities(), args.json, format_capabilities)
    except BonsaiError as err:
        print(f"error: {err.code_name}: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return 2 if err.code == grpc.StatusCode.INVALID_ARGUMENT else 1
    except (OSError, ValueError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, (ValueError, TypeError)) else 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


def main_exit() -> None:
    """Entry point of the `bonsai` console script."""
    tune_for_streaming()  # the CLI's process is ours to tune (see bonsai/allocator.py)
    sys.exit(main())
