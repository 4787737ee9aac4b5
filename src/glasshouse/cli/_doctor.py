"""``glasshouse doctor``: what this host can do, and what each gap disables."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json: bool) -> None:
    """Probe BTF, BPF, cgroups, KVM, VMMs and sandboxes on this host."""
    from glasshouse.doctor import run_checks

    checks = run_checks()
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="glasshouse doctor")
    table.add_column("check")
    table.add_column("")
    table.add_column("detail", overflow="fold")
    table.add_column("if missing, disables", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]no[/]", c.detail, c.disables)
    Console().print(table)
