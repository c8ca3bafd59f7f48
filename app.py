"""CDK entry point (``cdk.json``: ``python3 app.py``).

Run directly, it synthesizes into a temporary directory that is removed on
exit unless CDK_OUTDIR names one to keep; under ``npx cdk synth`` the CLI
sets CDK_OUTDIR to cdk.out. cdk-nag runs either way: any unacknowledged
finding fails the synth.
"""

import os

from infra.app import build_app


def main() -> None:
    app, stack = build_app()
    assembly = app.synth()
    if "CDK_OUTDIR" not in os.environ:
        resources = len(assembly.get_stack_by_name(stack.stack_name).template["Resources"])
        print(f"{stack.stack_name}: {resources} resources, cdk-nag clean (CDK_OUTDIR keeps them)")


if __name__ == "__main__":
    main()
