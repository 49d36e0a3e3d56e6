package rollout

import (
	"fmt"
	"strings"
)

// maxNamesInMessage is how many names a message lists before "(N more)".
const maxNamesInMessage = 3

// NodeCount is "1 node" or "N nodes".
func NodeCount(n int) string { return CountOf(n, "node") }

// CountOf is "1 <noun>" or "N <noun>s".
func CountOf(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// NameList names at most maxNamesInMessage items, then "(N more)".
func NameList(names []string) string {
	if len(names) <= maxNamesInMessage {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s (%d more)", strings.Join(names[:maxNamesInMessage], ", "), len(names)-maxNamesInMessage)
}
