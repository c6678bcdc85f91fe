"""Gin files as package resources: gin reads a relative --gin_file or include such as
`seqio_tasks/gin/models/m2_25m.gin` from the importable package `seqio_tasks.gin.models` first
(from any working directory); a directory without __init__.py makes that lookup crash."""
