"""`ulmfit generate`: Generate text from a prompt with a language model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ulmfit.cli._common import Device

Model = Annotated[str, typer.Argument(help="LM bundle, or the output folder of a training run (uses model-best), "
                                      "or a shared archive of either (URL or .tar.gz).")]
Prompt = Annotated[str, typer.Argument(help="Text to continue.")]
Words = Annotated[int, typer.Option("--words", "-n", help="Words to generate after the prompt.")]
Temperature = Annotated[float, typer.Option(
    "--temperature", "-t", help="Divide the logits by T: <1 is more conservative, >1 more varied, 0 = greedy.")]
TopK = Annotated[int, typer.Option("--top-k", help="Sample only among the K most likely tokens (0 = off).")]
TopP = Annotated[float, typer.Option(
    "--top-p", help="Nucleus sampling: the smallest set of tokens with probability mass >= P, in (0, 1] (1 = off).")]
Samples = Annotated[int, typer.Option("--samples", "-s", help="How many continuations to generate.")]
GenSeed = Annotated[Optional[int], typer.Option(
    "--seed", help="Random seed: the same seed gives the same text (default: different every run).")]
Greedy = Annotated[bool, typer.Option("--greedy", help="Always take the most likely token (same as -t 0).")]
AllowUnk = Annotated[bool, typer.Option("--allow-unk", help="Allow the unknown-word token xxunk in the output.")]


HELP = (
    "Generate text from a prompt with a language model.\n\n"
    "The prompt is read once and the recurrent state (AWD-LSTM or QRNN) carried forward one token at a time "
    "(cost linear in the words generated). Prints each sample; several samples are separated by a blank line."
)


def register(app: typer.Typer) -> None:
    @app.command("generate", help=HELP)
    def generate(
        model: Model,
        prompt: Prompt,
        words: Words = 50,
        temperature: Temperature = 1.0,
        top_k: TopK = 0,
        top_p: TopP = 1.0,
        samples: Samples = 1,
        seed: GenSeed = None,
        greedy: Greedy = False,
        allow_unk: AllowUnk = False,
        device: Device = None,
    ) -> None:
        from ulmfit.generate import SamplingOptions

        SamplingOptions(words=words, temperature=temperature, top_k=top_k, top_p=top_p, samples=samples,
                        seed=seed, greedy=greedy).validate()  # bad options fail before the model loads
        from ulmfit.lm.language_model import LanguageModel

        lm = LanguageModel.load(model, device=device)
        texts = lm.generate(prompt, words=words, temperature=temperature, top_k=top_k, top_p=top_p,
                            samples=samples, seed=seed, greedy=greedy, allow_unk=allow_unk)
        typer.echo("\n\n".join(texts))
