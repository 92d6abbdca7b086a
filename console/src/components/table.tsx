// Tables scroll sideways inside their box on a narrow screen; the box can
// take the focus (and is named by the caption), so a keyboard can scroll
// it too.

import type { ComponentChildren } from "preact";

export function Table({ caption, class: cls, children }: { caption: string; class?: string; children: ComponentChildren }) {
  return (
    <div class="table-wrap" tabIndex={0} role="region" aria-label={caption}>
      <table class={cls}>
        <caption class="sr-only">{caption}</caption>
        {children}
      </table>
    </div>
  );
}
