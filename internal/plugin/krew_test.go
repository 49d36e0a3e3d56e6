package plugin

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestKrewManifest checks the krew manifest template the way hack/plugin-dist.sh fills it in:
// every platform the script builds has an entry whose archive name, sha256 placeholder and
// binary match, and nothing is left unfilled.
func TestKrewManifest(t *testing.T) {
	tmpl, err := os.ReadFile("../../plugins/nodetask.yaml")
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile("../../hack/plugin-dist.sh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`all_platforms="([^"]+)"`).FindSubmatch(script)
	if m == nil {
		t.Fatal("hack/plugin-dist.sh lists no platforms")
	}
	platforms := strings.Fields(string(m[1]))
	filled := strings.ReplaceAll(string(tmpl), "${VERSION}", "v1.2.3")
	for _, p := range platforms {
		filled = strings.ReplaceAll(filled, "${SHA256_"+strings.ReplaceAll(p, "/", "_")+"}", strings.Repeat("a", 64))
	}
	if strings.Contains(filled, "${") {
		t.Fatalf("placeholders left after filling in %v:\n%s", platforms, filled)
	}
	var plugin struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec struct {
			Version          string `json:"version"`
			Homepage         string `json:"homepage"`
			ShortDescription string `json:"shortDescription"`
			Description      string `json:"description"`
			Caveats          string `json:"caveats"`
			Platforms        []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				} `json:"selector"`
				URI    string `json:"uri"`
				SHA256 string `json:"sha256"`
				Bin    string `json:"bin"`
			} `json:"platforms"`
		} `json:"spec"`
	}
	if err := yaml.UnmarshalStrict([]byte(filled), &plugin); err != nil {
		t.Fatal(err)
	}
	if plugin.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || plugin.Kind != "Plugin" || plugin.Metadata.Name != "nodetask" {
		t.Errorf("not a krew Plugin named nodetask: %s %s %s", plugin.APIVersion, plugin.Kind, plugin.Metadata.Name)
	}
	if plugin.Spec.Version != "v1.2.3" || plugin.Spec.ShortDescription == "" {
		t.Errorf("version %q, shortDescription %q", plugin.Spec.Version, plugin.Spec.ShortDescription)
	}
	var seen []string
	for _, p := range plugin.Spec.Platforms {
		os, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		seen = append(seen, os+"/"+arch)
		if want := "/v1.2.3/kubectl-nodetask_v1.2.3_" + os + "_" + arch + ".tar.gz"; !strings.HasSuffix(p.URI, want) {
			t.Errorf("%s/%s: uri %s does not end in %s", os, arch, p.URI, want)
		}
		wantBin := "kubectl-nodetask"
		if os == "windows" {
			wantBin += ".exe"
		}
		if p.Bin != wantBin || len(p.SHA256) != 64 {
			t.Errorf("%s/%s: bin %q, sha256 %q", os, arch, p.Bin, p.SHA256)
		}
	}
	slices.Sort(seen)
	slices.Sort(platforms)
	if !slices.Equal(seen, platforms) {
		t.Errorf("the manifest has platforms %v, the script builds %v", seen, platforms)
	}
}
