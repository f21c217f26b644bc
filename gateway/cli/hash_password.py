"""`edgestream hash-password`: the hash to put in an MQTT listener's `users` table."""

from __future__ import annotations

import click

from ...edge.mqtt.auth import hash_password as _hash


@click.command(epilog="Example: edgestream hash-password --user sensor-17\n\n"
               "then in the config: users = { \"sensor-17\" = \"pbkdf2_sha256$...\" }")
@click.option("--user", default="", help="Only used to print a ready-made config line.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="The password (asked for when not given; prefer the prompt: no shell history).")
@click.option("--iterations", type=int, default=100_000, show_default=True,
              help="PBKDF2 rounds: more is slower to guess and slower to check on every connect.")
def hash_password(user: str, password: str, iterations: int) -> None:
    """Hash a password for the MQTT listener's `users` (PBKDF2-SHA256, salted)."""
    encoded = _hash(password, iterations=iterations)
    click.echo(f'"{user}" = "{encoded}"' if user else encoded)
