// The S3 persistence tier (issue 5).
