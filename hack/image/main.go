// Command image builds the manager's container image without a container engine: the
// manager cross-compiled for each platform, static, in an image with nothing else but a
// passwd entry for its non-root user (no shell, no package manager), as an OCI image index
// written to an OCI archive that podman, docker (with the containerd image store), skopeo
// and crane can load or push. It prints the index's digest, which is the image's digest once
// pushed, for the install bundle and the chart.
//
// The build is reproducible: the same source gives the same digest (files and the image's
// creation time are dated SOURCE_DATE_EPOCH, 0 when unset).
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonroot is the image's user: the uid and gid distroless calls nonroot. A numeric USER lets
// the kubelet check the Deployment's runAsNonRoot without a passwd lookup.
const nonroot = 65532

func main() {
	var (
		repo      = flag.String("repo", "ghcr.io/nodetask/nodetask-operator", "image repository, recorded in the archive's reference name")
		version   = flag.String("version", "dev", "image tag and org.opencontainers.image.version")
		platforms = flag.String("platforms", "linux/amd64,linux/arm64", "comma-separated os/arch list")
		out       = flag.String("out", "dist/nodetask-operator.oci.tar", "the OCI archive to write")
		source    = flag.String("source", "https://github.com/nodetask/nodetask-operator", "org.opencontainers.image.source")
	)
	flag.Parse()
	digest, err := build(*repo, *version, strings.Split(*platforms, ","), *out, *source)
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
	fmt.Println(digest)
}

func build(repo, version string, platforms []string, out, source string) (string, error) {
	epoch, err := sourceDateEpoch()
	if err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "nodetask-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, platform := range platforms {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(platform), "/")
		if !ok {
			return "", fmt.Errorf("platform %q is not os/arch", platform)
		}
		bin := filepath.Join(work, goos+"_"+goarch, "manager")
		if err := compile(goos, goarch, version, bin); err != nil {
			return "", err
		}
		img, err := image(bin, goos, goarch, version, source, epoch)
		if err != nil {
			return "", err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: goos, Architecture: goarch},
		}})
	}
	digest, err := idx.Digest()
	if err != nil {
		return "", err
	}

	dir := filepath.Join(work, "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": repo + ":" + version,
	})); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	if err := tarDir(dir, out, epoch); err != nil {
		return "", err
	}
	return digest.String(), nil
}

// compile builds a static manager for one platform.
func compile(goos, goarch, version, bin string) error {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin, "./cmd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the manager for %s/%s: %w", goos, goarch, err)
	}
	return nil
}

// image is one platform's image: one layer with /manager, /etc/passwd and /etc/group.
func image(bin, goos, goarch, version, source string, epoch time.Time) (v1.Image, error) {
	manager, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		mode int64
		data []byte
	}{
		{"etc/group", 0o644, fmt.Appendf(nil, "root:x:0:\nnonroot:x:%d:\n", nonroot)},
		{"etc/passwd", 0o644, fmt.Appendf(nil, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot)},
		{"manager", 0o755, manager},
	}
	for _, d := range []string{"etc/", "home/", "home/nonroot/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}
		if d == "home/nonroot/" {
			hdr.Mode, hdr.Uid, hdr.Gid = 0o700, nonroot, nonroot
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "hack/image: the manager, /etc/passwd, /etc/group"}}); err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = goos, goarch, v1.Time{Time: epoch}
	cfg.Config.User = fmt.Sprintf("%d:%d", nonroot, nonroot)
	cfg.Config.Entrypoint = []string{"/manager"}
	cfg.Config.WorkingDir = "/"
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":    "nodetask-operator",
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.source":   source,
		"org.opencontainers.image.licenses": "Apache-2.0",
	}
	return mutate.ConfigFile(img, cfg)
}

// tarDir writes the directory as a tar archive, in name order, dated epoch.
func tarDir(dir, out string, epoch time.Time) error {
	var names []string
	if err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		names = append(names, path)
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(names)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, path := range names {
		info, err := os.Lstat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: epoch, Typeflag: tar.TypeReg, Size: info.Size()}
		if info.IsDir() {
			hdr.Name, hdr.Mode, hdr.Typeflag, hdr.Size = hdr.Name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.IsDir() {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// sourceDateEpoch is SOURCE_DATE_EPOCH (the reproducible-builds convention), or the Unix epoch.
func sourceDateEpoch() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	s, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", v, err)
	}
	return time.Unix(s, 0).UTC(), nil
}
