from echotune.cli import main

main()
