from krait.cli import main

main()
