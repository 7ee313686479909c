"""The ``shax`` command.

shax demo                          the seed's demo: stages and numbers
shax print FILE                    parse, infer, print the typed program(s)
shax compile FILE --stage vjp      print a stage: typed, rewritten, linearized, linear,
                                   transposed, vjp
shax eval FILE --inputs '[[1,2],[3]]'   evaluate the first def, print outputs as JSON
shax serve [--host H] [--port P] [--model-repository DIR] [--grpc-port [P]] ...   the service
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

STAGES = ("typed", "rewritten", "linearized", "linear", "transposed", "vjp")


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _to_json(a: np.ndarray):
    return np.asarray(a).tolist()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # the server parses its own flags (shax_server.cli)
        from shax_server.cli import serve_main

        return serve_main(argv[1:]) or 0
    parser = argparse.ArgumentParser(prog="shax", description="You Only Linearize Once, served.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the seed's demo")
    p_print = sub.add_parser("print", help="parse, infer and print an IR file")
    p_print.add_argument("file")
    p_compile = sub.add_parser("compile", help="print one pipeline stage of an IR file")
    p_compile.add_argument("file")
    p_compile.add_argument("--stage", choices=STAGES, default="vjp")
    p_compile.add_argument("--wrt", type=lambda s: [int(i) for i in s.split(",") if i])
    p_eval = sub.add_parser("eval", help="evaluate an IR file's first def")
    p_eval.add_argument("file")
    p_eval.add_argument("--inputs", required=True, help="JSON list of nested lists, one per input")
    sub.add_parser("serve", help="run the HTTP service (shax serve --help for its flags)")
    args = parser.parse_args(argv)

    import shax_core as sx

    try:
        if args.command == "demo":
            from shax_core.demo import run

            run()
        elif args.command == "print":
            print(sx.print_module([sx.infer(p) for p in sx.parse_module(_read(args.file))]))
        elif args.command == "compile":
            program = sx.parse(_read(args.file))
            print(sx.stages(program, wrt=args.wrt)[args.stage])
        elif args.command == "eval":
            program = sx.infer(sx.parse(_read(args.file)))
            inputs = json.loads(args.inputs)
            outs = sx.evaluate(program, *inputs)
            print(json.dumps([_to_json(o) for o in outs]))
    except sx.ShaxError as e:
        print(f"shax: error: {e}", file=sys.stderr)
        return 1
    except (OSError, json.JSONDecodeError) as e:
        print(f"shax: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
