# Sample PHT train: summary statistics over the stations' counts.
files <- list.files("/opt/pht_results/stations", full.names = TRUE)
counts <- sapply(files, function(f) jsonlite::fromJSON(f)$count)
writeLines(sprintf("stations=%d total=%d", length(counts), sum(counts)), "/opt/pht_results/summary.txt")
