// Command render renders a Helm chart the way `helm template` does, for
// machines where Helm cannot be installed: Go's text/template with the sprig
// functions (both Debian packages) and the few functions and objects Helm
// adds that bonsai's chart uses: include, tpl, toYaml, fromYaml, required,
// .Files.Get, .Release, .Chart, .Capabilities.
//
//	render -chart DIR [-values FILE]... [-name RELEASE] [-namespace NS]
//
// Values load like Helm's (YAML through JSON, so every number is a float64)
// and later -values files are merged over earlier ones (null deletes a key).
// Prints a JSON object: {"manifests": [{"source", "content"}], "notes"}.
// Build with GO111MODULE=off GOPATH=/usr/share/gocode.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v2"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// files is .Files: the chart's own files, read on demand.
type files struct{ root string }

func (f files) Get(name string) string {
	data, err := os.ReadFile(filepath.Join(f.root, filepath.FromSlash(name)))
	if err != nil {
		return ""
	}
	return string(data)
}

// toJSONTypes turns yaml.v2's map[interface{}]interface{} into JSON's types,
// as Helm's YAML (sigs.k8s.io/yaml) does: string keys, float64 numbers.
func toJSONTypes(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		out := make(map[string]interface{}, len(t))
		for k, val := range t {
			out[fmt.Sprint(k)] = toJSONTypes(val)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, val := range t {
			out[i] = toJSONTypes(val)
		}
		return out
	case int:
		return float64(t)
	case int64:
		return float64(t)
	case uint64:
		return float64(t)
	default:
		return v
	}
}

func parseYAML(data []byte) (map[string]interface{}, error) {
	var raw interface{}
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	if raw == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := toJSONTypes(raw).(map[string]interface{})
	if !ok {
		return nil, errors.New("top level is not a map")
	}
	return m, nil
}

// merge puts src over dst like Helm's value coalescing: maps merge
// recursively, anything else replaces, null deletes.
func merge(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = merge(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m, err := parseYAML([]byte(s))
	if err != nil {
		return map[string]interface{}{"Error": err.Error()}
	}
	return m
}

func required(msg string, v interface{}) (interface{}, error) {
	if v == nil {
		return nil, errors.New(msg)
	}
	if s, ok := v.(string); ok && s == "" {
		return nil, errors.New(msg)
	}
	return v, nil
}

func run() error {
	chartDir := flag.String("chart", "", "chart directory")
	name := flag.String("name", "bonsai", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	var valueFiles multiFlag
	flag.Var(&valueFiles, "values", "values file merged over the chart's (repeatable)")
	flag.Parse()
	if *chartDir == "" {
		return errors.New("-chart is required")
	}

	chartData, err := os.ReadFile(filepath.Join(*chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	chartMeta, err := parseYAML(chartData)
	if err != nil {
		return fmt.Errorf("Chart.yaml: %w", err)
	}
	values := map[string]interface{}{}
	for _, path := range append([]string{filepath.Join(*chartDir, "values.yaml")}, valueFiles...) {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		v, err := parseYAML(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		values = merge(values, v)
	}

	// Helm exposes Chart.yaml's fields capitalised.
	chart := map[string]interface{}{}
	for k, v := range chartMeta {
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": map[string]interface{}{
			"Name": *name, "Namespace": *namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v1.28.0", "Major": "1", "Minor": "28"},
		},
		"Files":    files{root: *chartDir},
		"Template": map[string]interface{}{"BasePath": filepath.Base(*chartDir) + "/templates"},
	}

	tmpl := template.New("chart").Option("missingkey=zero")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYAML
	funcs["fromYaml"] = fromYAML
	funcs["required"] = required
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := tmpl.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := tmpl.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	tmpl.Funcs(funcs)

	paths, err := filepath.Glob(filepath.Join(*chartDir, "templates", "*"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := tmpl.New(filepath.Base(path)).Parse(string(data)); err != nil {
			return err
		}
	}

	type manifest struct {
		Source  string `json:"source"`
		Content string `json:"content"`
	}
	out := struct {
		Manifests []manifest `json:"manifests"`
		Notes     string     `json:"notes"`
	}{Manifests: []manifest{}}
	separator := regexp.MustCompile(`(?m)^---\s*$`)
	for _, path := range paths {
		base := filepath.Base(path)
		if strings.HasPrefix(base, "_") {
			continue
		}
		t := top
		t["Template"] = map[string]interface{}{"Name": filepath.Base(*chartDir) + "/templates/" + base,
			"BasePath": filepath.Base(*chartDir) + "/templates"}
		var buf bytes.Buffer
		if err := tmpl.ExecuteTemplate(&buf, base, t); err != nil {
			return err
		}
		if base == "NOTES.txt" {
			out.Notes = strings.TrimSpace(buf.String())
			continue
		}
		for _, doc := range separator.Split(buf.String(), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			out.Manifests = append(out.Manifests, manifest{Source: "templates/" + base, Content: doc})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
