from edgegolf.cli import main

main()
