// Package release checks the artifacts of `make release` as an admin and krew receive them.
// `make test-release` builds a release and runs these tests on it; without RELEASE_DIR they
// are skipped (make test does not build releases).
package release

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// release is what `make test-release` built: its directory, version, image repository and
// platforms.
type release struct {
	dir, version, repo string
	platforms          []string
}

func built(t *testing.T) release {
	dir := os.Getenv("RELEASE_DIR")
	if dir == "" {
		t.Skip("RELEASE_DIR is unset: `make test-release` builds a release and runs these tests on it")
	}
	return release{dir: dir, version: filepath.Base(dir), repo: os.Getenv("IMAGE_REPO"),
		platforms: strings.Split(os.Getenv("PLATFORMS"), ",")}
}

func (r release) read(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(r.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func (r release) digest(t *testing.T) string {
	return strings.TrimSpace(string(r.read(t, "nodetask-operator_"+r.version+".oci.tar.digest")))
}

// TestChecksums: SHA256SUMS lists every artifact, with its sum.
func TestChecksums(t *testing.T) {
	r := built(t)
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(r.read(t, "SHA256SUMS")))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		sums[name] = sum
	}
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() == "SHA256SUMS" {
			continue
		}
		names = append(names, e.Name())
		got := sha256.Sum256(r.read(t, e.Name()))
		if sums[e.Name()] != hex.EncodeToString(got[:]) {
			t.Errorf("%s: SHA256SUMS says %q, the file's sum is %x", e.Name(), sums[e.Name()], got)
		}
	}
	for _, want := range []string{"install.yaml", "nodetask.yaml", "nodetask-operator_" + r.version + ".oci.tar",
		"nodetask-operator-" + strings.TrimPrefix(r.version, "v") + ".tgz"} {
		if !slices.Contains(names, want) {
			t.Errorf("the release has no %s (it has %v)", want, names)
		}
	}
}

// TestImage: the OCI archive holds an index with one image per platform, whose digest is the
// one the install bundle and the chart pin; each image runs /manager as 65532 and says its
// version and license.
func TestImage(t *testing.T) {
	r := built(t)
	dir := t.TempDir()
	untar(t, filepath.Join(r.dir, "nodetask-operator_"+r.version+".oci.tar"), dir)
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("the archive's index.json has %d entries, want the release's one index", len(im.Manifests))
	}
	if got := im.Manifests[0].Digest.String(); got != r.digest(t) {
		t.Errorf("the archive's index is %s, the .digest file says %s", got, r.digest(t))
	}
	if ref := im.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; ref != r.repo+":"+r.version {
		t.Errorf("reference name %q, want %s:%s", ref, r.repo, r.version)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	platforms, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range platforms.Manifests {
		got = append(got, m.Platform.OS+"/"+m.Platform.Architecture)
		img, err := idx.Image(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, m.Platform, r.version)
	}
	if !slices.Equal(got, r.platforms) {
		t.Errorf("platforms %v, want %v", got, r.platforms)
	}
}

func checkImage(t *testing.T, img v1.Image, platform *v1.Platform, version string) {
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/manager"}) || cfg.OS != platform.OS || cfg.Architecture != platform.Architecture {
		t.Errorf("%s/%s: user %q, entrypoint %v, platform %s/%s", platform.OS, platform.Architecture, c.User, c.Entrypoint, cfg.OS, cfg.Architecture)
	}
	if c.Labels["org.opencontainers.image.version"] != version || c.Labels["org.opencontainers.image.licenses"] != "Apache-2.0" {
		t.Errorf("labels %v", c.Labels)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var files []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, h.Name)
	}
	// Nothing but the manager and the user: no shell, no package manager.
	want := []string{"etc/", "home/", "home/nonroot/", "etc/group", "etc/passwd", "manager"}
	if !slices.Equal(files, want) {
		t.Errorf("the image's files are %v, want %v", files, want)
	}
}

// TestInstallBundle: install.yaml runs the released image by its digest, and holds the three CRDs.
func TestInstallBundle(t *testing.T) {
	r := built(t)
	want := r.repo + ":" + r.version + "@" + r.digest(t)
	var images, crds []string
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(r.read(t, "install.yaml")), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch obj["kind"] {
		case "Deployment":
			var d appsv1.Deployment
			b, _ := yaml.Marshal(obj)
			if err := yaml.Unmarshal(b, &d); err != nil {
				t.Fatal(err)
			}
			for _, c := range d.Spec.Template.Spec.Containers {
				images = append(images, c.Image)
			}
		case "CustomResourceDefinition":
			crds = append(crds, obj["metadata"].(map[string]any)["name"].(string))
		}
	}
	if !slices.Equal(images, []string{want}) {
		t.Errorf("the Deployment's images are %v, want [%s]", images, want)
	}
	slices.Sort(crds)
	if !slices.Equal(crds, []string{"noderesultslices.nodetask.io", "nodetasks.nodetask.io", "nodetaskschedules.nodetask.io"}) {
		t.Errorf("CRDs %v", crds)
	}
}

// TestChart: the packaged chart has the release's version and appVersion, and its default
// values run the released image by its digest.
func TestChart(t *testing.T) {
	r := built(t)
	chrt, err := loader.Load(filepath.Join(r.dir, "nodetask-operator-"+strings.TrimPrefix(r.version, "v")+".tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if chrt.Metadata.Version != strings.TrimPrefix(r.version, "v") || chrt.Metadata.AppVersion != r.version {
		t.Errorf("chart version %s, appVersion %s", chrt.Metadata.Version, chrt.Metadata.AppVersion)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "nodetask", "nodetask-system"
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}
	rel, err := install.Run(chrt, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "image: \"" + r.repo + ":" + r.version + "@" + r.digest(t) + "\""
	found := false
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		found = found || strings.Contains(doc, want)
	}
	if !found {
		t.Errorf("no manifest of the chart's defaults has %s", want)
	}
}

// TestKrewInstallsThePlugin: krew itself installs the plugin from the release's manifest and
// archive (it checks the manifest, the platform and the sha256), and the plugin runs.
func TestKrewInstallsThePlugin(t *testing.T) {
	r := built(t)
	krew := os.Getenv("KREW")
	if krew == "" {
		t.Fatal("KREW is unset: make test-release provides krew")
	}
	goos, goarch, _ := strings.Cut(os.Getenv("PLUGIN_PLATFORM"), "/")
	root := t.TempDir()
	cmd := exec.Command(krew, "install", "--manifest="+filepath.Join(r.dir, "nodetask.yaml"),
		"--archive="+filepath.Join(r.dir, "kubectl-nodetask_"+r.version+"_"+goos+"_"+goarch+".tar.gz"))
	cmd.Env = append(os.Environ(), "KREW_ROOT="+root, "KREW_OS="+goos, "KREW_ARCH="+goarch)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("krew install: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(root, "bin", "kubectl-nodetask"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kubectl nodetask") {
		t.Errorf("the installed plugin: %v\n%s", err, out)
	}
	for _, f := range []string{"LICENSE", "README.md"} {
		if _, err := os.Stat(filepath.Join(root, "store", "nodetask", r.version, f)); err != nil {
			t.Errorf("krew's copy of the plugin has no %s: %v", f, err)
		}
	}
}

func untar(t *testing.T, archive, dir string) {
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(path, dir) {
			t.Fatalf("%s leaves the archive", h.Name)
		}
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(path, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
