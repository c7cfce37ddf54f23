"""One APIRouter per task (sudoku, maze, arc) plus the system routes (models, health, metrics)."""
