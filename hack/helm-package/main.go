// Command helm-package packages a Helm chart directory into a .tgz archive with the Helm
// SDK (no helm binary needed): `make helm-package`.
package main

import (
	"fmt"
	"os"

	"helm.sh/helm/v3/pkg/action"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: helm-package CHART_DIR OUT_DIR")
		os.Exit(2)
	}
	if err := os.MkdirAll(os.Args[2], 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pkg := action.NewPackage()
	pkg.Destination = os.Args[2]
	path, err := pkg.Run(os.Args[1], nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging the chart:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", path)
}
