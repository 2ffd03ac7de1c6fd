/** Splits a text stream into lines (std's TextLineStream, which JSR would give). */
export class TextLineStream extends TransformStream<string, string> {
  constructor() {
    let pending = "";
    super({
      transform(chunk, controller) {
        pending += chunk;
        let nl;
        while ((nl = pending.indexOf("\n")) >= 0) {
          controller.enqueue(pending.slice(0, nl));
          pending = pending.slice(nl + 1);
        }
      },
      flush(controller) {
        if (pending) controller.enqueue(pending);
      },
    });
  }
}
