"""`redline train ...`: making weights (SFT, rejection-sampling rounds, DPO, PRM) on TRL + PEFT."""

from __future__ import annotations

import typer

train_app = typer.Typer(help="Train adapters and process reward models on redline's own data (TRL + PEFT).",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
