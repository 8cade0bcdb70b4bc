"""`ulmfit` entry point: registers one module per command and turns UlmfitError into one line + exit 1."""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

import typer

from ulmfit.errors import UlmfitError

app = typer.Typer(
    name="ulmfit",
    help="ULMFiT transfer learning for text: tokenize, pretrain and fine-tune AWD-LSTM or QRNN language models, "
    "train classifiers (one label, several labels or a number per text) with discriminative learning rates and "
    "gradual unfreezing, evaluate, ensemble, predict, generate, explain, serve over HTTP and export to ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"verbose": bool(os.environ.get("ULMFIT_VERBOSE"))}


def _print_version(value: bool) -> None:
    if value:
        from ulmfit import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    if verbose:
        _state["verbose"] = True


def _register() -> None:
    # Imported here, not at top, so a broken command module cannot break `ulmfit --help` for the others.
    # Once per process: `main` runs many times in one process (tests, scripts), and every registration adds the
    # commands again to the Typer app, which would then rebuild ever more of them on each call.
    if _state.get("registered"):
        return
    from ulmfit.cli import (classify, data, data_merge, evaluate, explain, export, generate, lm_finetune, lr_find,
                            predict, pretrain, quickstart, runs, serve, suggest)

    app.add_typer(data.app, name="data")
    data_merge.register(data.app)
    for mod in (pretrain, lm_finetune, lr_find, classify, evaluate, predict, suggest, explain, serve, export,
                generate, runs, quickstart):
        mod.register(app)
    _state["registered"] = True


def _terminate_as_interrupt(signum, frame):
    """SIGTERM handler: unwind like Ctrl-C.

    SIGTERM (`kill PID`, `timeout`, a batch scheduler's pre-emption) would otherwise end Python without running a
    single `finally:`, leaving hidden staging directories behind and losing what an interrupted run saves on Ctrl-C
    (the LM's model-last and checkpoint, the classifier's finished epochs).
    """
    raise KeyboardInterrupt


def _default_sigterm_in_child() -> None:
    # Forked workers (the tokenizer's pool) must die at once when their parent terminates them: one blocked in a
    # lock it inherited mid-acquire never runs a Python handler, and pool.terminate() would then wait forever.
    if signal.getsignal(signal.SIGTERM) is _terminate_as_interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_default_sigterm_in_child)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this directly)."""
    _register()
    command = typer.main.get_command(app)
    installed = threading.current_thread() is threading.main_thread()  # signal.signal works only there
    if installed:
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        # Standalone mode lets click print usage errors (unknown option, missing argument) its own way, exit 2.
        command.main(args=argv, prog_name="ulmfit", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except UlmfitError as e:
        if _state["verbose"]:
            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return 1
    finally:
        if installed:  # None: the previous handler was not set from Python
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
