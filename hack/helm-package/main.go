// Command helm-package packages a Helm chart directory into a .tgz archive with the Helm
// SDK (no helm binary needed): `make helm-package`.
package main

import (
	"flag"
	"fmt"
	"os"

	"helm.sh/helm/v3/pkg/action"
)

func main() {
	version := flag.String("version", "", "the chart's version (semver without the v); empty keeps Chart.yaml's")
	appVersion := flag.String("app-version", "", "the chart's appVersion (the image tag by default); empty keeps Chart.yaml's")
	flag.Parse()
	if flag.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: helm-package [--version V] [--app-version V] CHART_DIR OUT_DIR")
		os.Exit(2)
	}
	if err := os.MkdirAll(flag.Arg(1), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pkg := action.NewPackage()
	pkg.Destination = flag.Arg(1)
	pkg.Version, pkg.AppVersion = *version, *appVersion
	path, err := pkg.Run(flag.Arg(0), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "packaging the chart:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", path)
}
