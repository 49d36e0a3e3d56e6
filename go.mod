module github.com/nodetask/nodetask-operator

go 1.26
