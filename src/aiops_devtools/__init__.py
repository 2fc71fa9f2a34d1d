"""Development tools shipped beside the service but never imported by it: mock provider servers."""
