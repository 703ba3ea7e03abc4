//go:build !unix

package main

// serveLock: without flock, nothing keeps a second server off the directory.
func serveLock(string) (func(), error) { return func() {}, nil }
