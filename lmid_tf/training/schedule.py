"""Training schedules as data: a tuple of phases the trainer loops over.

A phase names the layer groups that train (model.GROUPS or 'all'), its
learning rate and epochs, whether the heatmap reconstruction loss is on, and
an optional warm-up and step decay. A schedule is one flag value, its
phases separated by ';':

  --schedule=stage1 trains=all lr=1e-3 epochs=10; stage2a trains=reconstruction lr=1e-3 epochs=1 reconstruct=1

One value, not a repeated flag, so that a flagfile that includes another,
or the command line, replaces the whole schedule instead of appending to it.
The paper's schedules are flagfiles: configs/paper/schedule_landmark_id.flags
(its two stages, each in two steps) and configs/paper/schedule_baseline.flags.
"""

import dataclasses

from lmid_tf.modeling import model


@dataclasses.dataclass(frozen=True)
class Phase:
  name: str
  trains: tuple                 # layer groups, or ('all',)
  lr: float
  epochs: int
  reconstruct: bool = False     # heatmap reconstruction loss on
  warmup_epochs: int = 0        # linear warm-up from lr / 10
  decay_epochs: tuple = ()      # multiply lr by 0.1 at each of these epochs

  def learning_rate(self, epoch: int) -> float:
    """Learning rate at `epoch` (0-based, within the phase)."""
    lr = self.lr
    if epoch < self.warmup_epochs:
      lr *= 0.1 + 0.9 * epoch / self.warmup_epochs
    for boundary in self.decay_epochs:
      if epoch >= boundary:
        lr *= 0.1
    return lr


def parse_phase(text: str) -> Phase:
  """'name key=value ...' -> Phase; raises ValueError naming the problem."""
  parts = text.split()
  if not parts or '=' in parts[0]:
    raise ValueError(f'phase {text!r}: must start with a name')
  fields = {'name': parts[0]}
  for part in parts[1:]:
    key, sep, value = part.partition('=')
    if not sep:
      raise ValueError(f'phase {text!r}: {part!r} is not key=value')
    fields[key] = value
  known = {f.name for f in dataclasses.fields(Phase)}
  unknown = set(fields) - known
  if unknown:
    raise ValueError(f'phase {text!r}: unknown keys {sorted(unknown)}; '
                     f'known: {sorted(known)}')
  try:
    trains = tuple(t for t in fields.get('trains', 'all').split(',') if t)
    for group in trains:
      if group != 'all' and group not in model.GROUPS:
        raise ValueError(f'unknown layer group {group!r} (groups: '
                         f'{", ".join(model.GROUPS)}, all)')
    return Phase(
        name=fields['name'], trains=trains, lr=float(fields['lr']),
        epochs=int(fields['epochs']),
        reconstruct=fields.get('reconstruct', '0') in ('1', 'true', 'True'),
        warmup_epochs=int(fields.get('warmup_epochs', 0)),
        decay_epochs=tuple(int(e) for e in
                           fields.get('decay_epochs', '').split(',') if e))
  except KeyError as e:
    raise ValueError(f'phase {text!r}: missing {e.args[0]}=') from None
  except ValueError as e:
    raise ValueError(f'phase {text!r}: {e}') from None


def parse_schedule(text: str) -> tuple:
  """'phase; phase; ...' -> tuple of Phase ('' gives no phases).

  Raises ValueError naming the phase that is wrong or named twice
  (checkpoints and logs name phases).
  """
  phases = tuple(parse_phase(part.strip()) for part in text.split(';')
                 if part.strip())
  names = [p.name for p in phases]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ValueError(f'--schedule: phase {repeated[0]!r} is named twice; '
                     'give each phase its own name')
  return phases
