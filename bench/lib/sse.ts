/**
 * An incremental reader of server-sent events (the registry's watch stream): feed it chunks as
 * they arrive, get back the events they completed. Comment lines (`: keep-alive`) are skipped; a
 * multi-line `data` is joined with newlines, as the EventSource specification does.
 */

export interface SseEvent {
  /** `message` when the block names none. */
  readonly event: string;
  readonly data: string;
}

export class SseReader {
  #buffer = '';
  /** A CR at the end of a chunk: its LF may start the next one. */
  #cr = false;

  /** The events completed by `chunk` (a block ends with an empty line). */
  push(chunk: string): SseEvent[] {
    let text = this.#cr ? `\r${chunk}` : chunk;
    this.#cr = text.endsWith('\r');
    if (this.#cr) text = text.slice(0, -1);
    this.#buffer += text.replace(/\r\n?/g, '\n');
    const events: SseEvent[] = [];
    let end = this.#buffer.indexOf('\n\n');
    while (end !== -1) {
      const block = this.#buffer.slice(0, end);
      this.#buffer = this.#buffer.slice(end + 2);
      const event = parseBlock(block);
      if (event) events.push(event);
      end = this.#buffer.indexOf('\n\n');
    }
    return events;
  }
}

function parseBlock(block: string): SseEvent | undefined {
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return data.length ? { event, data: data.join('\n') } : undefined;
}
