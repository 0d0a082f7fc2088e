from kumo.cli.main import app

app(prog_name="kumo")
