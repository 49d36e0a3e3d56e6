package controllers

import "time"

// GracefulShutdownTimeout is how long the manager lets running reconciles finish after
// SIGTERM. The Deployment's terminationGracePeriodSeconds (config/manager/manager.yaml) must
// be longer, or the kubelet kills the manager before it has released its leader lease.
const GracefulShutdownTimeout = 20 * time.Second
