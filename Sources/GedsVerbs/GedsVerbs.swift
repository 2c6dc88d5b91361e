// The RDMA transport (issue 3): typed wrappers over CVerbs.
