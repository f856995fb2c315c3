"""`python -m greeter`: the image's entrypoint."""

from greeter.server import main

main()
