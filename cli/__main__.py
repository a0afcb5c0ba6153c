from merginguriel_cli.main import main

main()
