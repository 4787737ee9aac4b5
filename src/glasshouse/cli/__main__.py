from glasshouse.cli import main

main()
