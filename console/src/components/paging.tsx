// Lists that page as the API does (page_token / next_page_token). The
// tokens of the pages seen are kept so "Previous page" can go back: the API
// only goes forward.

import { useEffect, useState } from "preact/hooks";
import { problemOf, type Problem } from "../api/errors";

export interface Page<T> {
  items: T[];
  next: string;
}

export interface Paged<T> {
  items: T[] | null;
  problem: Problem | null;
  page: number;
  hasPrevious: boolean;
  hasNext: boolean;
  previous(): void;
  next(): void;
  /** Loads the current page again (after a change). */
  reload(): void;
}

/**
 * `query` names what is listed (the filters): a new query starts again at
 * its first page, since a token is bound to the filters it was issued for.
 */
export function usePaged<T>(query: string, fetchPage: (pageToken: string) => Promise<Page<T>>): Paged<T> {
  const [position, setPosition] = useState({ query, tokens: [""], index: 0 });
  const current = position.query === query ? position : { query, tokens: [""], index: 0 };
  const [result, setResult] = useState<{ query: string; key: string; items: T[]; next: string } | null>(null);
  const [problem, setProblem] = useState<Problem | null>(null);
  const [version, setVersion] = useState(0);
  const key = `${query}\u0000${current.index}\u0000${version}`;

  useEffect(() => {
    let live = true;
    fetchPage(current.tokens[current.index]!).then(
      (page) => {
        if (!live) return;
        setResult({ query, key, items: page.items, next: page.next });
        setProblem(null);
      },
      (error) => {
        if (live) setProblem(problemOf(error));
      },
    );
    return () => {
      live = false;
    };
  }, [key]);

  // Keep showing the last page while the next loads (no flicker), but not
  // another query's rows.
  const shown = result?.query === query ? result : null;
  return {
    items: shown?.items ?? null,
    problem,
    page: current.index + 1,
    hasPrevious: current.index > 0,
    hasNext: !!shown?.next,
    previous() {
      if (current.index > 0) setPosition({ ...current, index: current.index - 1 });
    },
    next() {
      // Only from a page that has arrived: its token is the next one.
      if (!shown?.next || shown.key !== key) return;
      setPosition({ query, tokens: [...current.tokens.slice(0, current.index + 1), shown.next], index: current.index + 1 });
    },
    reload() {
      setVersion((v) => v + 1);
    },
  };
}

export function Pager({ paged, label }: { paged: Paged<unknown>; label: string }) {
  if (!paged.hasPrevious && !paged.hasNext) return null;
  return (
    <nav class="pager" aria-label={label}>
      {/* aria-disabled, not disabled: a button that was just pressed keeps
          the keyboard focus when it turns out to be the last page. */}
      <button type="button" onClick={paged.previous} aria-disabled={paged.hasPrevious ? undefined : "true"}>
        Previous page
      </button>
      <span aria-live="polite">Page {paged.page}</span>
      <button type="button" onClick={paged.next} aria-disabled={paged.hasNext ? undefined : "true"}>
        Next page
      </button>
    </nav>
  );
}
