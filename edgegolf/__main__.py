from edgegolf.console import main

main()
