"""Dataset builders (Sudoku, Maze, ARC) writing the original on-disk layout, the reader the
trainer uses (`dataset.load_split`), and the Maze-Hard-like generator. See README.md here."""
