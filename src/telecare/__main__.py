from telecare.cli import main

main()
